//! The offer allocator: Mesos's HierarchicalDRF, pure and synchronous.
//!
//! The master owns one [`Allocator`] and drives it: it reports cluster events (agents and
//! frameworks coming and going, offers declined, tasks ending) and runs allocation cycles, each of
//! which returns the [`Allocation`]s it should turn into offers. There is no I/O, no clock (every
//! time-dependent call takes `now`), no locking and no async; the caller serialises access.
//!
//! # API
//!
//! ```text
//! Allocator::new(AllocatorConfig)                   AllocatorConfig::default(): cpus:0.01|mem:32, 1 s
//! set_role_weight(role, w) -> Result                w > 0 and finite (Mesos /weights)
//! add_agent(agent, total, used: &[(fw, res)])       used = resources held by running tasks
//! remove_agent(agent)                               its allocations and filters vanish
//! activate_agent / deactivate_agent(agent)          an inactive (unreachable) agent gets no offers
//! add_framework(fw, role, active, suppressed)       also re-registration (role change allowed)
//! remove_framework(fw)                              its allocations are released on every agent
//! activate_framework / deactivate_framework(fw)     inactive = disconnected: no offers, filters cleared
//! suppress(fw) / revive(fw, now)                    revive also clears the framework's filters
//! recover(fw, agent, res, refuse, now)              res comes back; Some(d > 0) installs a filter
//! allocate_used(fw, agent, res)                     bookkeeping: res is in use by fw's tasks
//! allocate(now) / allocate_agents(&[agent], now)    one cycle over all / the candidate agents
//! framework_report(fw, now) / agent_free(agent) / total()   diagnostics for /master/state
//! ```
//!
//! Names are opaque strings (framework and agent ids). Calls naming an unknown agent or framework
//! are no-ops (the usual race: a decline arrives after the framework was removed), except that
//! [`Allocator::add_agent`] accepts `used` for a framework it doesn't know yet (after a master
//! failover agents re-register before their frameworks): it is tracked as an unregistered
//! placeholder in role `*` that gets no offers until [`Allocator::add_framework`] adopts it.
//!
//! # Semantics (HierarchicalDRF, `src/master/allocator/mesos/hierarchical.cpp`)
//!
//! A cycle visits the candidate agents in random order. For each active agent whose free resources
//! are allocatable (they contain one of the `min_allocatable` alternatives, Mesos's
//! `--min_allocatable_resources=cpus:0.01|mem:32`), roles are taken in DRF order and, within a role,
//! frameworks in DRF order; the first framework that is registered, active, not suppressed and has
//! no live filter hiding the offer gets **all** of the agent's free resources. Shares are updated
//! at once, so the next agent sees the new order.
//!
//! * DRF share = `max` over cpus/mem/disk/gpus of `allocated_r / cluster_total_r`; a role's share
//!   is divided by its weight (default 1). Ties go to fewer allocations so far, then to the older
//!   entry. Roles are flat (no `a/b` hierarchy); all resources are unreserved (`*`).
//! * Filters (Mesos `RefusedOfferFilter`): `recover(.., Some(d), now)` with `d > 0` hides from the
//!   framework any later offer on that agent that is a **subset** of the refused resources, until
//!   `now + max(d, filter_min)` (capped at a year). A bigger offer (a task ended meanwhile) goes
//!   through. `None` installs no filter: the caller applies Mesos's 5 s default for a DECLINE
//!   without `filters`.
//! * Suppressed, inactive and unregistered frameworks are left out of the sort entirely.
//! * Deactivating a framework clears its filters, as Mesos does; its allocations stay (offers are
//!   rescinded by the master, which then calls `recover`).
//! * `recover` and `allocate_used` are clamped to what is actually allocated / free, so a
//!   duplicate recover (rescind racing a decline) can never push an agent's free above its total.
//!
//! # Performance
//!
//! Agents, frameworks and roles live in dense slot vectors; names are mapped to slots only at the
//! API boundary. Each role keeps its eligible frameworks in a `BTreeSet` keyed by
//! `(share, allocations, slot)`, and the roles are in another such set, so an allocation re-keys
//! one framework and one role in `O(log n)` instead of re-sorting. Filters live on their agent,
//! sorted by framework slot, split into a hot 64-byte key (expiry, scalars, port span: no pointer
//! to follow) and a cold half (exact resources, id). Per agent, one sequential pass over its keys
//! marks the frameworks they hide the offer from in a reused bitset, then the DRF order is walked
//! to the first unmarked framework. Filters expire through a min-heap, so a cycle does no work
//! for filters that are not due. See BENCHMARKS.md (`## allocator`) and `benches/allocator.rs`.

pub mod synthetic;
#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use drove_proto::resources::{ResourceError, Resources};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

/// Refusal filters never last longer than this (Mesos caps `refuse_seconds` similarly).
pub const MAX_FILTER_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Scalars below this are zero, as in `drove_proto::resources`.
const EPSILON: f64 = 1e-6;

/// Allocator settings.
#[derive(Debug, Clone)]
pub struct AllocatorConfig {
    /// Alternatives (an OR): an agent's free resources are offered only if they contain at least
    /// one of these. Mesos's default `cpus:0.01|mem:32` is `[cpus:0.01, mem:32]`; see
    /// [`AllocatorConfig::parse_min_allocatable`]. Empty: any non-empty free resources.
    pub min_allocatable: Vec<Resources>,
    /// The shortest filter: filters last `max(refuse, filter_min)`. Mesos uses the allocation
    /// interval (1 s).
    pub filter_min: Duration,
    /// Seed for the agent shuffle; `None` seeds from the OS (tests and benchmarks pass one).
    pub seed: Option<u64>,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            min_allocatable: vec![
                Resources::cpus_mem(0.01, 0.0),
                Resources::cpus_mem(0.0, 32.0),
            ],
            filter_min: Duration::from_secs(1),
            seed: None,
        }
    }
}

impl AllocatorConfig {
    /// Parses Mesos's `--min_allocatable_resources` form, `cpus:0.01|mem:32`.
    pub fn parse_min_allocatable(text: &str) -> Result<Vec<Resources>, ResourceError> {
        text.split('|')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Resources::parse)
            .collect()
    }
}

/// Errors from calls that validate their input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    #[error("role weight must be a positive finite number, got {0}")]
    InvalidWeight(f64),
}

/// The outcome of a cycle: `resources` on `agent` are now allocated to `framework`, and the
/// master should offer them.
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub framework: String,
    pub agent: String,
    pub resources: Resources,
}

/// A live refusal filter, for diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterReport {
    pub agent: String,
    pub resources: Resources,
    pub expires_at: Instant,
}

/// The last allocation a framework received.
#[derive(Debug, Clone, PartialEq)]
pub struct LastAllocation {
    pub at: Instant,
    /// `None` if the agent has been removed since.
    pub agent: Option<String>,
    pub resources: Resources,
}

/// A framework's allocator state, for `/master/state` diagnostics.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameworkReport {
    pub framework: String,
    pub role: String,
    /// `false` for a placeholder created by `add_agent(.., used)` before the framework registered.
    pub registered: bool,
    pub active: bool,
    pub suppressed: bool,
    /// Scalars only (ports are per agent and are not summed).
    pub allocated: Resources,
    /// The framework's DRF share (unweighted, against the cluster total).
    pub share: f64,
    /// Its role's weighted DRF share.
    pub role_share: f64,
    pub role_weight: f64,
    /// How many allocations (offers) it has received.
    pub allocations: u64,
    pub last_allocation: Option<LastAllocation>,
    /// Live filters, soonest to expire first.
    pub filters: Vec<FilterReport>,
}

/// Scalar part of a resource vector: cpus, mem, disk, gpus.
type Scalars = [f64; 4];

/// Sort key: (share as ordered bits, allocations so far, slot).
type Key = (u64, u64, u32);

fn scalars(r: &Resources) -> Scalars {
    [r.cpus, r.mem, r.disk, r.gpus]
}

fn add_scalars(dst: &mut Scalars, r: &Resources) {
    for (d, v) in dst.iter_mut().zip(scalars(r)) {
        *d += v;
    }
}

fn sub_scalars(dst: &mut Scalars, r: &Resources) {
    for (d, v) in dst.iter_mut().zip(scalars(r)) {
        *d = if *d - v < EPSILON { 0.0 } else { *d - v };
    }
}

fn share(alloc: &Scalars, total: &Scalars) -> f64 {
    alloc
        .iter()
        .zip(total)
        .filter(|(_, t)| **t > EPSILON)
        .map(|(a, t)| a / t)
        .fold(0.0, f64::max)
}

/// Non-negative finite floats order like their bit patterns.
fn share_bits(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x.to_bits()
    } else {
        0
    }
}

/// `a ∩ b`: the part of `a` that `b` also has.
fn intersect(a: &Resources, b: &Resources) -> Resources {
    Resources {
        cpus: a.cpus.min(b.cpus),
        mem: a.mem.min(b.mem),
        disk: a.disk.min(b.disk),
        gpus: a.gpus.min(b.gpus),
        ports: a.ports.subtract(&a.ports.subtract(&b.ports)),
    }
}

/// A filter's cold half: identity and the exact refused resources.
#[derive(Debug)]
struct Filter {
    id: u64,
    resources: Resources,
}

/// Port ranges in a form the hot path can test without following a pointer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PortSpan {
    Empty,
    /// One range `[lo, hi]`.
    One(u32, u32),
    /// Several ranges: fall back to `Ranges::contains`.
    Many,
}

impl PortSpan {
    /// For a refused set: its exact shape. For an offer, `One` is its hull (first..last).
    fn of(ranges: &drove_proto::resources::Ranges, hull: bool) -> PortSpan {
        let s = ranges.as_slice();
        let (Some(first), Some(last)) = (s.first(), s.last()) else {
            return PortSpan::Empty;
        };
        match (u32::try_from(first.0), u32::try_from(last.1)) {
            (Ok(lo), Ok(hi)) if hull || s.len() == 1 => PortSpan::One(lo, hi),
            _ => PortSpan::Many,
        }
    }
}

/// A filter's hot half, scanned every cycle: 64 bytes, no pointers.
#[derive(Debug, Clone, Copy)]
struct FilterKey {
    expires_at: Instant,
    scalars: Scalars,
    ports: PortSpan,
}

/// Whether a filter covers an offer: `Some(answer)`, or `None` when only the exact port ranges
/// can tell.
fn covers(key: &FilterKey, offer: &Scalars, offer_ports: PortSpan) -> Option<bool> {
    for (k, o) in key.scalars.iter().zip(offer) {
        if *o > *k + EPSILON {
            return Some(false);
        }
    }
    match (offer_ports, key.ports) {
        (PortSpan::Empty, _) => Some(true),
        (_, PortSpan::Empty) => Some(false),
        (PortSpan::One(lo, hi), PortSpan::One(klo, khi)) => Some(klo <= lo && hi <= khi),
        _ => None,
    }
}

/// An agent's filters, sorted by framework slot, in three parallel vectors.
#[derive(Debug, Default)]
struct AgentFilters {
    fws: Vec<u32>,
    keys: Vec<FilterKey>,
    cold: Vec<Filter>,
}

impl AgentFilters {
    /// The positions of framework `f`'s filters.
    fn range(&self, f: u32) -> std::ops::Range<usize> {
        let lo = self.fws.partition_point(|&x| x < f);
        let hi = lo + self.fws[lo..].partition_point(|&x| x == f);
        lo..hi
    }

    fn len(&self) -> usize {
        self.fws.len()
    }

    fn is_empty(&self) -> bool {
        self.fws.is_empty()
    }

    fn insert(&mut self, f: u32, key: FilterKey, filter: Filter) {
        let at = self.range(f).end;
        self.fws.insert(at, f);
        self.keys.insert(at, key);
        self.cold.insert(at, filter);
    }

    fn remove(&mut self, i: usize) {
        self.fws.remove(i);
        self.keys.remove(i);
        self.cold.remove(i);
    }

    /// Drops every filter of `f`; returns how many.
    fn clear(&mut self, f: u32) -> usize {
        let range = self.range(f);
        let n = range.len();
        if n > 0 {
            self.fws.drain(range.clone());
            self.keys.drain(range.clone());
            self.cold.drain(range);
        }
        n
    }

    /// Live filters as (framework, key, cold half).
    fn iter(&self) -> impl Iterator<Item = (u32, &FilterKey, &Filter)> {
        self.fws
            .iter()
            .zip(&self.keys)
            .zip(&self.cold)
            .map(|((f, k), c)| (*f, k, c))
    }

    /// Marks in `blocked` (a bitset over framework slots) every framework whose live filter
    /// hides an offer of `free`: one sequential pass over the agent's filters.
    fn mark_blocked(&self, free: &Resources, now: Instant, blocked: &mut [u64]) {
        let offer = scalars(free);
        let offer_ports = PortSpan::of(&free.ports, true);
        for (i, (&f, key)) in self.fws.iter().zip(&self.keys).enumerate() {
            let (word, bit) = ((f / 64) as usize, 1u64 << (f % 64));
            let Some(w) = blocked.get_mut(word) else {
                continue;
            };
            if *w & bit != 0 || key.expires_at <= now {
                continue;
            }
            let hides = covers(key, &offer, offer_ports)
                .unwrap_or_else(|| self.cold[i].resources.contains(free));
            if hides {
                *w |= bit;
            }
        }
    }
}

#[derive(Debug)]
struct Agent {
    name: String,
    /// Distinguishes incarnations of a reused slot.
    uid: u64,
    total: Resources,
    free: Resources,
    active: bool,
    /// What each framework holds here (offered or used).
    allocs: Vec<(u32, Resources)>,
    filters: AgentFilters,
    /// Dedupes candidates in `allocate_agents`.
    stamp: u64,
}

impl Agent {
    fn alloc_mut(&mut self, f: u32) -> Option<&mut Resources> {
        self.allocs
            .iter_mut()
            .find(|(x, _)| *x == f)
            .map(|(_, r)| r)
    }
}

#[derive(Debug)]
struct Framework {
    name: String,
    role: u32,
    registered: bool,
    active: bool,
    suppressed: bool,
    alloc: Scalars,
    allocations: u64,
    /// Its key in its role's `fws` set, when it is in it.
    key: Option<Key>,
    /// (when, agent slot, agent uid, what).
    last: Option<(Instant, u32, u64, Resources)>,
}

impl Framework {
    fn eligible(&self) -> bool {
        self.registered && self.active && !self.suppressed
    }
}

#[derive(Debug)]
struct Role {
    name: String,
    weight: f64,
    alloc: Scalars,
    allocations: u64,
    /// Eligible frameworks in DRF order.
    fws: BTreeSet<Key>,
    /// Its key in `role_set`, when it is in it (it is iff `fws` is not empty).
    key: Option<Key>,
}

/// Slot vectors with name lookup and slot reuse.
#[derive(Debug)]
struct Slots<T> {
    items: Vec<Option<T>>,
    index: HashMap<String, u32>,
    vacant: Vec<u32>,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Slots {
            items: Vec::new(),
            index: HashMap::new(),
            vacant: Vec::new(),
        }
    }
}

impl<T> Slots<T> {
    fn slot(&self, name: &str) -> Option<u32> {
        self.index.get(name).copied()
    }

    fn get(&self, i: u32) -> Option<&T> {
        self.items.get(i as usize).and_then(Option::as_ref)
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut T> {
        self.items.get_mut(i as usize).and_then(Option::as_mut)
    }

    fn insert(&mut self, name: &str, item: T) -> u32 {
        let i = match self.vacant.pop() {
            Some(i) => {
                self.items[i as usize] = Some(item);
                i
            }
            None => {
                self.items.push(Some(item));
                (self.items.len() - 1) as u32
            }
        };
        self.index.insert(name.to_string(), i);
        i
    }

    fn remove(&mut self, name: &str) -> Option<(u32, T)> {
        let i = self.index.remove(name)?;
        let item = self.items.get_mut(i as usize)?.take()?;
        self.vacant.push(i);
        Some((i, item))
    }

    fn iter(&self) -> impl Iterator<Item = (u32, &T)> {
        self.items
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.as_ref().map(|t| (i as u32, t)))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (u32, &mut T)> {
        self.items
            .iter_mut()
            .enumerate()
            .filter_map(|(i, t)| t.as_mut().map(|t| (i as u32, t)))
    }
}

/// The HierarchicalDRF allocator. See the module documentation.
#[derive(Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    rng: StdRng,
    agents: Slots<Agent>,
    frameworks: Slots<Framework>,
    roles: Vec<Role>,
    role_index: HashMap<String, u32>,
    /// Roles with at least one eligible framework, in DRF order.
    role_set: BTreeSet<Key>,
    total: Scalars,
    /// The sort keys are stale (cluster total or a weight changed): rebuilt before the next cycle.
    dirty: bool,
    /// (expires_at, filter id, agent slot, framework slot); entries of removed filters linger.
    expiry: BinaryHeap<Reverse<(Instant, u64, u32, u32)>>,
    live_filters: usize,
    next_filter_id: u64,
    next_agent_uid: u64,
    stamp: u64,
    /// Candidate buffer reused across cycles.
    scratch: Vec<u32>,
    /// Bitset over framework slots reused across agents and cycles.
    blocked: Vec<u64>,
}

impl Allocator {
    pub fn new(config: AllocatorConfig) -> Self {
        let rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        Allocator {
            config,
            rng,
            agents: Slots::default(),
            frameworks: Slots::default(),
            roles: Vec::new(),
            role_index: HashMap::new(),
            role_set: BTreeSet::new(),
            total: [0.0; 4],
            dirty: false,
            expiry: BinaryHeap::new(),
            live_filters: 0,
            next_filter_id: 0,
            next_agent_uid: 0,
            stamp: 0,
            scratch: Vec::new(),
            blocked: Vec::new(),
        }
    }

    // ----- roles -------------------------------------------------------------------------------

    fn role_slot(&mut self, name: &str) -> u32 {
        if let Some(&r) = self.role_index.get(name) {
            return r;
        }
        self.roles.push(Role {
            name: name.to_string(),
            weight: 1.0,
            alloc: [0.0; 4],
            allocations: 0,
            fws: BTreeSet::new(),
            key: None,
        });
        let r = (self.roles.len() - 1) as u32;
        self.role_index.insert(name.to_string(), r);
        r
    }

    /// Sets a role's DRF weight (Mesos `/weights`); the role need not have frameworks yet.
    pub fn set_role_weight(&mut self, role: &str, weight: f64) -> Result<(), AllocatorError> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(AllocatorError::InvalidWeight(weight));
        }
        let r = self.role_slot(role);
        self.roles[r as usize].weight = weight;
        self.dirty = true;
        Ok(())
    }

    /// A role's weight (1 unless set).
    pub fn role_weight(&self, role: &str) -> f64 {
        self.role_index
            .get(role)
            .map_or(1.0, |&r| self.roles[r as usize].weight)
    }

    // ----- sort keys ---------------------------------------------------------------------------

    fn fw_key(&self, f: u32, fw: &Framework) -> Option<Key> {
        fw.eligible()
            .then(|| (share_bits(share(&fw.alloc, &self.total)), fw.allocations, f))
    }

    fn role_key(&self, r: u32) -> Option<Key> {
        let role = &self.roles[r as usize];
        (!role.fws.is_empty()).then(|| {
            let s = share(&role.alloc, &self.total) / role.weight;
            (share_bits(s), role.allocations, r)
        })
    }

    /// Brings framework `f`'s position (and its role's) up to date after a change.
    fn refresh(&mut self, f: u32) {
        if self.dirty {
            return;
        }
        let Some(fw) = self.frameworks.get(f) else {
            return;
        };
        let (old, new, r) = (fw.key, self.fw_key(f, fw), fw.role);
        if old != new {
            let role = &mut self.roles[r as usize];
            if let Some(k) = old {
                role.fws.remove(&k);
            }
            if let Some(k) = new {
                role.fws.insert(k);
            }
            if let Some(fw) = self.frameworks.get_mut(f) {
                fw.key = new;
            }
        }
        self.refresh_role(r);
    }

    fn refresh_role(&mut self, r: u32) {
        if self.dirty {
            return;
        }
        let new = self.role_key(r);
        let role = &mut self.roles[r as usize];
        if role.key != new {
            if let Some(k) = role.key {
                self.role_set.remove(&k);
            }
            if let Some(k) = new {
                self.role_set.insert(k);
            }
            role.key = new;
        }
    }

    /// Takes framework `f` out of its role's set (before its role changes).
    fn unlink(&mut self, f: u32) {
        let Some(fw) = self.frameworks.get_mut(f) else {
            return;
        };
        let (key, r) = (fw.key.take(), fw.role);
        if let Some(k) = key {
            self.roles[r as usize].fws.remove(&k);
        }
        self.refresh_role(r);
    }

    /// Recomputes every key (after the cluster total or a weight changed).
    fn rebuild(&mut self) {
        self.role_set.clear();
        for role in &mut self.roles {
            role.fws.clear();
            role.key = None;
        }
        let total = self.total;
        for (f, fw) in self.frameworks.iter_mut() {
            fw.key = fw
                .eligible()
                .then(|| (share_bits(share(&fw.alloc, &total)), fw.allocations, f));
            if let Some(k) = fw.key {
                self.roles[fw.role as usize].fws.insert(k);
            }
        }
        for r in 0..self.roles.len() as u32 {
            let key = self.role_key(r);
            self.roles[r as usize].key = key;
            if let Some(k) = key {
                self.role_set.insert(k);
            }
        }
        self.dirty = false;
    }

    // ----- bookkeeping -------------------------------------------------------------------------

    /// Adds `res` to framework `f`'s and its role's allocation.
    fn charge(&mut self, f: u32, res: &Resources) {
        if let Some(fw) = self.frameworks.get_mut(f) {
            add_scalars(&mut fw.alloc, res);
            add_scalars(&mut self.roles[fw.role as usize].alloc, res);
        }
    }

    fn credit(&mut self, f: u32, res: &Resources) {
        if let Some(fw) = self.frameworks.get_mut(f) {
            sub_scalars(&mut fw.alloc, res);
            sub_scalars(&mut self.roles[fw.role as usize].alloc, res);
        }
    }

    /// Moves what `res` names of agent `a`'s free resources to framework `f` (clamped to free).
    fn take_free(&mut self, f: u32, a: u32, res: &Resources) {
        let Some(agent) = self.agents.get_mut(a) else {
            return;
        };
        let taken = intersect(res, &agent.free);
        if taken.is_empty() {
            return;
        }
        agent.free.subtract(&taken);
        match agent.alloc_mut(f) {
            Some(held) => held.add(&taken),
            None => agent.allocs.push((f, taken.clone())),
        }
        self.charge(f, &taken);
        self.refresh(f);
    }

    /// Inserts an unregistered framework (no offers until `add_framework`).
    fn placeholder(&mut self, name: &str, role: u32) -> u32 {
        self.frameworks.insert(
            name,
            Framework {
                name: name.to_string(),
                role,
                registered: false,
                active: false,
                suppressed: false,
                alloc: [0.0; 4],
                allocations: 0,
                key: None,
                last: None,
            },
        )
    }

    // ----- agents ------------------------------------------------------------------------------

    /// Adds (or replaces) an agent. `used` lists what frameworks' tasks already hold on it
    /// (re-registration); it is clamped to `total`.
    pub fn add_agent(&mut self, agent: &str, total: Resources, used: &[(&str, Resources)]) {
        self.remove_agent(agent);
        add_scalars(&mut self.total, &total);
        self.dirty = true;
        let uid = self.next_agent_uid;
        self.next_agent_uid += 1;
        let a = self.agents.insert(
            agent,
            Agent {
                name: agent.to_string(),
                uid,
                free: total.clone(),
                total,
                active: true,
                allocs: Vec::new(),
                filters: AgentFilters::default(),
                stamp: 0,
            },
        );
        for (fw, res) in used {
            let f = match self.frameworks.slot(fw) {
                Some(f) => f,
                None => {
                    let star = self.role_slot("*");
                    self.placeholder(fw, star)
                }
            };
            self.take_free(f, a, res);
        }
    }

    /// Removes an agent: its allocations and filters vanish.
    pub fn remove_agent(&mut self, agent: &str) {
        let Some((_, removed)) = self.agents.remove(agent) else {
            return;
        };
        for (f, res) in &removed.allocs {
            self.credit(*f, res);
        }
        self.live_filters = self.live_filters.saturating_sub(removed.filters.len());
        sub_scalars(&mut self.total, &removed.total);
        self.dirty = true;
    }

    pub fn activate_agent(&mut self, agent: &str) {
        self.set_agent_active(agent, true);
    }

    /// An inactive (unreachable, draining) agent gets no offers; its allocations stay.
    pub fn deactivate_agent(&mut self, agent: &str) {
        self.set_agent_active(agent, false);
    }

    fn set_agent_active(&mut self, agent: &str, active: bool) {
        if let Some(a) = self.agents.slot(agent) {
            if let Some(ag) = self.agents.get_mut(a) {
                ag.active = active;
            }
        }
    }

    /// An agent's unallocated resources.
    pub fn agent_free(&self, agent: &str) -> Option<Resources> {
        let a = self.agents.slot(agent)?;
        self.agents.get(a).map(|ag| ag.free.clone())
    }

    /// The cluster total: scalars only (ports are per agent and are not summed).
    pub fn total(&self) -> Resources {
        let [cpus, mem, disk, gpus] = self.total;
        Resources {
            cpus,
            mem,
            disk,
            gpus,
            ..Default::default()
        }
    }

    // ----- frameworks --------------------------------------------------------------------------

    /// Adds a framework, or updates one on re-registration: its role may change, and its
    /// allocations (running tasks, outstanding offers) move with it to the new role. Don't call
    /// `remove_framework` first on a role change: that would free its tasks' resources.
    pub fn add_framework(&mut self, fw: &str, role: &str, active: bool, suppressed: bool) {
        let r = self.role_slot(role);
        let f = match self.frameworks.slot(fw) {
            Some(f) => f,
            None => self.placeholder(fw, r),
        };
        let (old_role, alloc) = match self.frameworks.get(f) {
            Some(x) => (x.role, x.alloc),
            None => return,
        };
        if old_role != r {
            self.unlink(f);
            let old = &mut self.roles[old_role as usize].alloc;
            for (d, v) in old.iter_mut().zip(alloc) {
                *d = if *d - v < EPSILON { 0.0 } else { *d - v };
            }
            for (d, v) in self.roles[r as usize].alloc.iter_mut().zip(alloc) {
                *d += v;
            }
            self.refresh_role(old_role);
        }
        if let Some(x) = self.frameworks.get_mut(f) {
            x.role = r;
            x.registered = true;
            x.active = active;
            x.suppressed = suppressed;
        }
        self.refresh(f);
    }

    /// Removes a framework: its allocations are released on every agent, its filters dropped.
    pub fn remove_framework(&mut self, fw: &str) {
        let Some(f) = self.frameworks.slot(fw) else {
            return;
        };
        self.unlink(f);
        let mut dropped = 0;
        for (_, agent) in self.agents.iter_mut() {
            if let Some(pos) = agent.allocs.iter().position(|(x, _)| *x == f) {
                let (_, res) = agent.allocs.swap_remove(pos);
                agent.free.add(&res);
            }
            dropped += agent.filters.clear(f);
        }
        self.live_filters = self.live_filters.saturating_sub(dropped);
        if let Some((_, removed)) = self.frameworks.remove(fw) {
            let role = &mut self.roles[removed.role as usize];
            for (d, v) in role.alloc.iter_mut().zip(removed.alloc) {
                *d = if *d - v < EPSILON { 0.0 } else { *d - v };
            }
            self.refresh_role(removed.role);
        }
    }

    pub fn activate_framework(&mut self, fw: &str) {
        if let Some(f) = self.frameworks.slot(fw) {
            if let Some(x) = self.frameworks.get_mut(f) {
                x.active = true;
            }
            self.refresh(f);
        }
    }

    /// A disconnected framework gets no offers; its filters are cleared (as in Mesos), its
    /// allocations stay until the master recovers them.
    pub fn deactivate_framework(&mut self, fw: &str) {
        if let Some(f) = self.frameworks.slot(fw) {
            if let Some(x) = self.frameworks.get_mut(f) {
                x.active = false;
            }
            self.clear_filters(f);
            self.refresh(f);
        }
    }

    /// SUPPRESS: no offers until `revive`.
    pub fn suppress(&mut self, fw: &str) {
        if let Some(f) = self.frameworks.slot(fw) {
            if let Some(x) = self.frameworks.get_mut(f) {
                x.suppressed = true;
            }
            self.refresh(f);
        }
    }

    /// REVIVE: unsuppresses the framework and clears its filters.
    pub fn revive(&mut self, fw: &str, now: Instant) {
        self.expire(now);
        if let Some(f) = self.frameworks.slot(fw) {
            if let Some(x) = self.frameworks.get_mut(f) {
                x.suppressed = false;
            }
            self.clear_filters(f);
            self.refresh(f);
        }
    }

    fn clear_filters(&mut self, f: u32) {
        let mut dropped = 0;
        for (_, agent) in self.agents.iter_mut() {
            dropped += agent.filters.clear(f);
        }
        self.live_filters = self.live_filters.saturating_sub(dropped);
    }

    // ----- resources ---------------------------------------------------------------------------

    /// Resources allocated to `fw` on `agent` come back (DECLINE, the unused part of an ACCEPT,
    /// a rescinded offer, a task's end). With `refuse = Some(d)`, `d > 0`, installs a filter
    /// hiding from `fw` any later offer on `agent` that is a subset of `resources`, until
    /// `now + max(d, filter_min)`. Recovering more than is allocated is clamped.
    pub fn recover(
        &mut self,
        fw: &str,
        agent: &str,
        resources: &Resources,
        refuse: Option<Duration>,
        now: Instant,
    ) {
        let (Some(f), Some(a)) = (self.frameworks.slot(fw), self.agents.slot(agent)) else {
            return;
        };
        let Some(ag) = self.agents.get_mut(a) else {
            return;
        };
        let mut back = None;
        if let Some(pos) = ag.allocs.iter().position(|(x, _)| *x == f) {
            let held = &mut ag.allocs[pos].1;
            let returned = intersect(resources, held);
            held.subtract(&returned);
            if held.is_empty() {
                ag.allocs.swap_remove(pos);
            }
            ag.free.add(&returned);
            back = Some(returned);
        }
        if let Some(returned) = back {
            self.credit(f, &returned);
            self.refresh(f);
        }
        if let Some(d) = refuse.filter(|d| !d.is_zero()) {
            if !resources.is_empty() {
                self.add_filter(f, a, resources, d, now);
            }
        }
    }

    fn add_filter(&mut self, f: u32, a: u32, resources: &Resources, d: Duration, now: Instant) {
        let d = d.max(self.config.filter_min).min(MAX_FILTER_DURATION);
        let expires_at = now.checked_add(d).unwrap_or(now);
        let id = self.next_filter_id;
        self.next_filter_id += 1;
        let Some(agent) = self.agents.get_mut(a) else {
            return;
        };
        let filters = &mut agent.filters;
        // The same refusal again extends the existing filter rather than stacking another.
        if let Some(i) = filters
            .range(f)
            .find(|&i| filters.cold[i].resources == *resources)
        {
            let key = &mut filters.keys[i];
            key.expires_at = key.expires_at.max(expires_at);
            self.expiry
                .push(Reverse((key.expires_at, filters.cold[i].id, a, f)));
        } else {
            let key = FilterKey {
                expires_at,
                scalars: scalars(resources),
                ports: PortSpan::of(&resources.ports, false),
            };
            let filter = Filter {
                id,
                resources: resources.clone(),
            };
            filters.insert(f, key, filter);
            self.live_filters += 1;
            self.expiry.push(Reverse((expires_at, id, a, f)));
        }
        if self.expiry.len() > 2 * self.live_filters + 1024 {
            self.compact_expiry();
        }
    }

    /// Rebuilds the expiry heap from the live filters (it collects entries of cleared filters).
    fn compact_expiry(&mut self) {
        let mut entries = Vec::with_capacity(self.live_filters);
        for (a, agent) in self.agents.iter() {
            for (f, key, flt) in agent.filters.iter() {
                entries.push(Reverse((key.expires_at, flt.id, a, f)));
            }
        }
        self.expiry = BinaryHeap::from(entries);
    }

    /// Drops the filters that are due.
    fn expire(&mut self, now: Instant) {
        while let Some(&Reverse((at, id, a, f))) = self.expiry.peek() {
            if at > now {
                break;
            }
            self.expiry.pop();
            let Some(agent) = self.agents.get_mut(a) else {
                continue;
            };
            let filters = &mut agent.filters;
            if let Some(i) = filters
                .range(f)
                .find(|&i| filters.cold[i].id == id && filters.keys[i].expires_at <= now)
            {
                filters.remove(i);
                self.live_filters = self.live_filters.saturating_sub(1);
            }
        }
    }

    /// Records that `fw`'s tasks use `resources` on `agent` (taken from its free resources,
    /// clamped). Offers made by `allocate` are already allocated; this is for re-registration
    /// and similar bookkeeping.
    pub fn allocate_used(&mut self, fw: &str, agent: &str, resources: &Resources) {
        if let (Some(f), Some(a)) = (self.frameworks.slot(fw), self.agents.slot(agent)) {
            self.take_free(f, a, resources);
        }
    }

    // ----- cycles ------------------------------------------------------------------------------

    /// One allocation cycle over every agent (the batched, periodic run).
    pub fn allocate(&mut self, now: Instant) -> Vec<Allocation> {
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        candidates.extend(self.agents.iter().map(|(a, _)| a));
        self.run(candidates, now)
    }

    /// One allocation cycle over the given agents (event-triggered: an agent was added,
    /// resources were recovered, a framework revived). Unknown and repeated names are skipped.
    pub fn allocate_agents(&mut self, agents: &[&str], now: Instant) -> Vec<Allocation> {
        let mut candidates = std::mem::take(&mut self.scratch);
        candidates.clear();
        self.stamp += 1;
        for name in agents {
            if let Some(a) = self.agents.slot(name) {
                if let Some(ag) = self.agents.get_mut(a) {
                    if ag.stamp != self.stamp {
                        ag.stamp = self.stamp;
                        candidates.push(a);
                    }
                }
            }
        }
        self.run(candidates, now)
    }

    fn allocatable(&self, free: &Resources) -> bool {
        !free.is_empty()
            && (self.config.min_allocatable.is_empty()
                || self.config.min_allocatable.iter().any(|m| free.contains(m)))
    }

    fn run(&mut self, mut candidates: Vec<u32>, now: Instant) -> Vec<Allocation> {
        self.expire(now);
        if self.dirty {
            self.rebuild();
        }
        candidates.shuffle(&mut self.rng);
        let mut blocked = std::mem::take(&mut self.blocked);
        blocked.clear();
        blocked.resize(self.frameworks.items.len().div_ceil(64), 0);
        let mut out = Vec::new();
        for &a in &candidates {
            let Some(agent) = self.agents.get(a) else {
                continue;
            };
            if !agent.active || !self.allocatable(&agent.free) || self.role_set.is_empty() {
                continue;
            }
            // One pass over the agent's filters marks the frameworks they hide this offer from;
            // then the first unmarked framework in DRF order wins.
            let filtered = !agent.filters.is_empty();
            if filtered {
                blocked.fill(0);
                agent.filters.mark_blocked(&agent.free, now, &mut blocked);
            }
            let is_blocked = |f: u32| {
                filtered
                    && blocked
                        .get((f / 64) as usize)
                        .is_some_and(|w| w & (1u64 << (f % 64)) != 0)
            };
            let mut chosen = None;
            'roles: for &(_, _, r) in &self.role_set {
                for &(_, _, f) in &self.roles[r as usize].fws {
                    if !is_blocked(f) {
                        chosen = Some(f);
                        break 'roles;
                    }
                }
            }
            if let Some(f) = chosen {
                self.grant(f, a, now, &mut out);
            }
        }
        self.scratch = candidates;
        self.blocked = blocked;
        out
    }

    /// Gives all of agent `a`'s free resources to framework `f`.
    fn grant(&mut self, f: u32, a: u32, now: Instant, out: &mut Vec<Allocation>) {
        let (Some(agent), Some(fw)) = (self.agents.get_mut(a), self.frameworks.get_mut(f)) else {
            return;
        };
        let res = std::mem::take(&mut agent.free);
        match agent.alloc_mut(f) {
            Some(held) => held.add(&res),
            None => agent.allocs.push((f, res.clone())),
        }
        add_scalars(&mut fw.alloc, &res);
        fw.allocations += 1;
        fw.last = Some((now, a, agent.uid, res.clone()));
        let role = &mut self.roles[fw.role as usize];
        add_scalars(&mut role.alloc, &res);
        role.allocations += 1;
        out.push(Allocation {
            framework: fw.name.clone(),
            agent: agent.name.clone(),
            resources: res,
        });
        self.refresh(f);
    }

    // ----- diagnostics -------------------------------------------------------------------------

    /// A framework's allocator state: shares, allocation, last allocation and live filters.
    pub fn framework_report(&self, fw: &str, now: Instant) -> Option<FrameworkReport> {
        let f = self.frameworks.slot(fw)?;
        let x = self.frameworks.get(f)?;
        let role = &self.roles[x.role as usize];
        let mut filters = Vec::new();
        for (_, agent) in self.agents.iter() {
            for i in agent.filters.range(f) {
                let expires_at = agent.filters.keys[i].expires_at;
                if expires_at > now {
                    filters.push(FilterReport {
                        agent: agent.name.clone(),
                        resources: agent.filters.cold[i].resources.clone(),
                        expires_at,
                    });
                }
            }
        }
        filters.sort_by_key(|r| r.expires_at);
        let [cpus, mem, disk, gpus] = x.alloc;
        Some(FrameworkReport {
            framework: x.name.clone(),
            role: role.name.clone(),
            registered: x.registered,
            active: x.active,
            suppressed: x.suppressed,
            allocated: Resources {
                cpus,
                mem,
                disk,
                gpus,
                ..Default::default()
            },
            share: share(&x.alloc, &self.total),
            role_share: share(&role.alloc, &self.total) / role.weight,
            role_weight: role.weight,
            allocations: x.allocations,
            last_allocation: x.last.as_ref().map(|(at, a, uid, res)| LastAllocation {
                at: *at,
                agent: self
                    .agents
                    .get(*a)
                    .filter(|ag| ag.uid == *uid)
                    .map(|ag| ag.name.clone()),
                resources: res.clone(),
            }),
            filters,
        })
    }

    /// What `fw` holds on `agent` (offered or used), if anything.
    pub fn allocated_on(&self, fw: &str, agent: &str) -> Option<Resources> {
        let f = self.frameworks.slot(fw)?;
        let a = self.agents.slot(agent)?;
        self.agents
            .get(a)?
            .allocs
            .iter()
            .find(|(x, _)| *x == f)
            .map(|(_, r)| r.clone())
    }

    /// Number of live (not yet swept) filters across all frameworks.
    pub fn filter_count(&self) -> usize {
        self.live_filters
    }
}
