//! How a test waits: for an event, never for a fixed time. Every wait is bounded, polls, and
//! when it gives up says what it waited for.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(50);

/// The value `probe` yields once it yields one, within `limit`; else the test fails naming
/// `what` it waited for.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// Returns once `cond` holds, within `limit`; else the test fails naming `what` it waited for.
pub async fn until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`until`] for a test with no runtime (a synchronous one): blocks the thread between looks.
pub fn blocking_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// The value `probe` yields once it is `Ok`, within `limit`; else the test fails naming `what`
/// it waited for and the last `Err`: what it saw instead (the last answer, the logs).
pub async fn until_ok<T, F, Fut>(what: &str, limit: Duration, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    until_ok_with(what, limit, probe, String::new).await
}

/// As [`until_ok`]; when it gives up, what `context` says then (the logs) is shown too. It is
/// read once, at the end, not on every look.
pub async fn until_ok_with<T, F, Fut>(
    what: &str,
    limit: Duration,
    mut probe: F,
    context: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let seen = match probe().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            let context = context();
            let sep = if context.is_empty() { "" } else { "\n" };
            panic!("{what}: not within {limit:?}; last seen: {seen}{sep}{context}");
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_its_condition_holds_and_fails_naming_it_when_it_does_not() {
        let mut n = 0;
        let got = eventually("the third look", Duration::from_secs(5), || {
            n += 1;
            let v = (n >= 3).then_some(n);
            async move { v }
        })
        .await;
        assert_eq!(got, 3);
        let never = tokio::spawn(until("the impossible", Duration::from_millis(120), || {
            false
        }));
        let e = never.await.expect_err("gives up");
        let said = e.into_panic();
        let said = said.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(said.contains("the impossible: not within"), "{said}");
        let never = tokio::spawn(until_ok("a yes", Duration::from_millis(120), || async {
            Err::<(), _>("a no".to_string())
        }));
        let said = never.await.expect_err("gives up").into_panic();
        let said = said.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            said.contains("a yes: not within") && said.ends_with("last seen: a no"),
            "{said}"
        );
    }
}
