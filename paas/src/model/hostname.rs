//! Custom domains' hostnames: what a valid one is, in the one spelling drove keeps.

/// `host` as drove keeps it (lowercase, no trailing dot), or why it is not a hostname an app
/// may claim: DNS names of two labels or more (letters, digits and inner hyphens, 63 characters
/// a label, 253 in all), not an address, not a wildcard, and not under `domain`, the PaaS's own
/// (each `<app>.<domain>` is already its app's).
pub fn parse(host: &str, domain: &str) -> Result<String, String> {
    let h = spelling(host);
    if h.is_empty() {
        return Err("a hostname is required".into());
    }
    if h.len() > 253 {
        return Err(format!("{host:?} is longer than 253 characters"));
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Err(format!("{host:?} is an address, not a hostname"));
    }
    let labels: Vec<&str> = h.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "{host:?} is not a domain name (it needs a dot: www.example.com)"
        ));
    }
    for l in &labels {
        let valid = !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !valid {
            return Err(format!(
                "{host:?}: {l:?} is not a DNS label (letters, digits and inner hyphens, 63 at most)"
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|t| t.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!("{host:?} is not a domain name"));
    }
    let own = domain.trim_end_matches('.').to_ascii_lowercase();
    if h == own || h.ends_with(&format!(".{own}")) {
        return Err(format!(
            "{host:?} is under drove's own domain {own}: each <app>.{own} is already its app's"
        ));
    }
    Ok(h)
}

/// `host` in the one spelling drove keeps (lowercase, no trailing dot), unchecked: how a
/// hostname given to look one up is compared.
pub fn spelling(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn hostnames_are_kept_in_one_spelling_and_bad_ones_say_why() {
        assert_eq!(
            parse("WWW.Shop.Example.", "localhost").unwrap(),
            "www.shop.example"
        );
        assert_eq!(
            parse("a-b.example.com", "localhost").unwrap(),
            "a-b.example.com"
        );
        for (bad, why) in [
            ("", "required"),
            ("localhost", "needs a dot"),
            ("shop.localhost", "drove's own domain"),
            ("10.0.0.1", "an address"),
            ("*.example.com", "not a DNS label"),
            ("-a.example.com", "not a DNS label"),
            ("a..example.com", "not a DNS label"),
            ("a_b.example.com", "not a DNS label"),
            ("1.2.3.400", "not a domain name"),
        ] {
            let e = parse(bad, "localhost").unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert!(parse(&format!("{}.com", "a".repeat(64)), "localhost").is_err());
    }
}
