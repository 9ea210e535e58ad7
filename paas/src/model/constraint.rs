//! Marathon's placement constraints (`[field, operator, value]`), parsed once.

use regex::Regex;

/// One Marathon constraint: `[field, operator, value?]`.
#[derive(Debug, Clone)]
pub enum Constraint {
    Unique(String),
    Cluster(String, Option<String>),
    GroupBy(String, Option<u32>),
    Like(String, Regex),
    Unlike(String, Regex),
    MaxPer(String, u32),
}

impl Constraint {
    pub fn parse(parts: &[String]) -> Result<Constraint, String> {
        let field = parts.first().cloned().unwrap_or_default();
        if field.is_empty() {
            return Err("a constraint is [field, operator, value?]".into());
        }
        let op = parts
            .get(1)
            .map(|s| s.to_ascii_uppercase())
            .unwrap_or_default();
        let value = parts.get(2).cloned();
        if parts.len() > 3 {
            return Err(format!("too many parts in {parts:?}"));
        }
        let regex = |v: Option<String>| -> Result<Regex, String> {
            let v = v.ok_or_else(|| format!("{op} needs a regular expression"))?;
            Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("bad regular expression: {e}"))
        };
        let number = |v: Option<String>| -> Result<u32, String> {
            v.ok_or_else(|| format!("{op} needs a number"))?
                .parse::<u32>()
                .map_err(|_| format!("{op} needs a whole number"))
        };
        Ok(match op.as_str() {
            "UNIQUE" => Constraint::Unique(field),
            "CLUSTER" => Constraint::Cluster(field, value),
            "GROUP_BY" => Constraint::GroupBy(field, value.map(|_| number(parts.get(2).cloned())).transpose()?),
            "LIKE" => Constraint::Like(field, regex(value)?),
            "UNLIKE" => Constraint::Unlike(field, regex(value)?),
            "MAX_PER" => Constraint::MaxPer(field, number(value)?),
            other => {
                return Err(format!(
                    "unknown operator {other:?}: use UNIQUE, CLUSTER, GROUP_BY, LIKE, UNLIKE or MAX_PER"
                ))
            }
        })
    }

    pub(crate) fn field(&self) -> &str {
        match self {
            Constraint::Unique(f)
            | Constraint::Cluster(f, _)
            | Constraint::GroupBy(f, _)
            | Constraint::Like(f, _)
            | Constraint::Unlike(f, _)
            | Constraint::MaxPer(f, _) => f,
        }
    }

    /// Whether an instance may go on an agent whose `field` is `value`, given the values of the
    /// app's instances already placed.
    pub(crate) fn allows(&self, value: Option<&str>, placed: &[Option<String>]) -> bool {
        let count = |v: &str| placed.iter().filter(|p| p.as_deref() == Some(v)).count();
        match self {
            Constraint::Unique(_) => value.is_some_and(|v| count(v) == 0),
            Constraint::Cluster(_, Some(want)) => value == Some(want.as_str()),
            Constraint::Cluster(_, None) => match placed.iter().flatten().next() {
                Some(first) => value == Some(first.as_str()),
                None => value.is_some(),
            },
            Constraint::GroupBy(_, groups) => {
                let Some(v) = value else { return false };
                let here = count(v);
                let mut placed_groups: Vec<&str> =
                    placed.iter().flatten().map(String::as_str).collect();
                placed_groups.sort_unstable();
                placed_groups.dedup();
                // Until the expected number of groups is reached, only new groups.
                if let Some(g) = groups {
                    if here > 0 && placed_groups.len() < *g as usize {
                        return false;
                    }
                }
                // Even spread: a new group, or one with no more than the fewest placed.
                here == 0 || placed_groups.iter().map(|k| count(k)).min().unwrap_or(0) >= here
            }
            Constraint::Like(_, re) => value.is_some_and(|v| re.is_match(v)),
            Constraint::Unlike(_, re) => value.is_none_or(|v| !re.is_match(v)),
            Constraint::MaxPer(_, n) => value.is_some_and(|v| count(v) < *n as usize),
        }
    }
}
