//! Turning the names NOC staff type into DNS names.
//!
//! Two conventions, both the ones people already know:
//! - *Absolute-only* fields (zone origins, app hostnames, nameservers, SOA names) are always
//!   absolute; the trailing dot is optional.
//! - *Zone-relative* fields (record owners and names inside record data) follow zone-file
//!   rules: `@` is the origin, a trailing dot makes a name absolute, anything else is
//!   relative to the origin.

use hickory_proto::rr::Name;

/// Parses a name that is always absolute (`apps.example.com` or `apps.example.com.`).
pub fn absolute(text: &str) -> Result<Name, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty name".to_owned());
    }
    if t == "." {
        return Ok(Name::root());
    }
    let mut name = Name::from_ascii(t).map_err(|e| format!("invalid name {text:?}: {e}"))?;
    check_labels(&name, text)?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// Parses a zone-relative owner name: `@`, `www`, or `www.apps.example.com.`.
pub fn relative(text: &str, origin: &Name) -> Result<Name, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty name (use \"@\" for the zone apex)".to_owned());
    }
    if t == "@" {
        return Ok(origin.clone());
    }
    let name = Name::from_ascii(t).map_err(|e| format!("invalid name {text:?}: {e}"))?;
    check_labels(&name, text)?;
    make_absolute(name, origin).map(|n| n.to_lowercase())
}

/// Completes a name parsed from record data: relative names get the origin appended.
pub fn make_absolute(name: Name, origin: &Name) -> Result<Name, String> {
    if name.is_fqdn() {
        return Ok(name);
    }
    let shown = name.to_string();
    name.append_domain(origin)
        .map_err(|e| format!("name {shown:?} is too long once the origin is appended: {e}"))
}

/// Hostname-friendly label checks beyond what the DNS allows: empty labels and spaces are
/// always typos in a config file.
fn check_labels(name: &Name, text: &str) -> Result<(), String> {
    for label in name.iter() {
        if label.is_empty() {
            return Err(format!("invalid name {text:?}: empty label"));
        }
        if label.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(format!("invalid name {text:?}: whitespace in a label"));
        }
    }
    Ok(())
}

/// The SOA RNAME: accepts DNS form (`hostmaster.example.com`) or an e-mail address
/// (`hostmaster@example.com`), which is what people naturally write.
pub fn mailbox(text: &str) -> Result<Name, String> {
    match text.trim().split_once('@') {
        None => absolute(text),
        Some((local, domain)) => {
            if local.is_empty() || local.contains('.') {
                return Err(format!(
                    "invalid mailbox {text:?}: write it in DNS form (dots in the local part \
                     must be escaped, e.g. first\\.last.example.com)"
                ));
            }
            absolute(&format!("{local}.{domain}"))
        }
    }
}

/// Is `text` a relative name (no trailing dot) that already ends with `origin`? Then the
/// trailing dot was most likely forgotten: `www.apps.example.com` in zone
/// `apps.example.com` would otherwise mean `www.apps.example.com.apps.example.com.`.
pub fn repeats_origin(text: &str, origin: &Name) -> bool {
    let t = text.trim();
    if t == "@" || t.ends_with('.') {
        return false;
    }
    match Name::from_ascii(t) {
        Ok(mut n) => {
            n.set_fqdn(true);
            origin.zone_of(&n)
        }
        Err(_) => false,
    }
}

/// `text` with `origin` removed from its end (for suggesting the relative form).
pub fn strip_origin(text: &str, origin: &Name) -> String {
    let t = text.trim().trim_end_matches('.');
    let o = origin.to_string();
    let o = o.trim_end_matches('.');
    match t.len().checked_sub(o.len()) {
        Some(0) => "@".to_owned(),
        Some(n) if t[n..].eq_ignore_ascii_case(o) => t[..n].trim_end_matches('.').to_owned(),
        _ => t.to_owned(),
    }
}

/// A name with one label under the root (`ns1.`) is never a real server's name: it is
/// a relative name written where an absolute one is needed.
pub fn check_not_single_label(name: &Name, text: &str) -> Result<(), String> {
    if name.num_labels() == 1 {
        return Err(format!(
            "{text:?} is a single-label name: write the full name (e.g. {}.example.com)",
            text.trim().trim_end_matches('.')
        ));
    }
    Ok(())
}

/// Is `name` equal to or below `zone`?
pub fn in_zone(name: &Name, zone: &Name) -> bool {
    zone.zone_of(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    #[test]
    fn absolute_names_ignore_trailing_dot_and_case() {
        assert_eq!(
            absolute("Apps.Example.COM").unwrap(),
            n("apps.example.com.")
        );
        assert_eq!(
            absolute("apps.example.com.").unwrap(),
            n("apps.example.com.")
        );
        assert!(absolute("").is_err());
        assert!(absolute("a..b").is_err());
    }

    #[test]
    fn relative_names_follow_zone_file_rules() {
        let origin = n("apps.example.com.");
        assert_eq!(relative("@", &origin).unwrap(), origin);
        assert_eq!(
            relative("WWW", &origin).unwrap(),
            n("www.apps.example.com.")
        );
        assert_eq!(
            relative("x.other.org.", &origin).unwrap(),
            n("x.other.org.")
        );
    }

    #[test]
    fn mailbox_accepts_email_form() {
        assert_eq!(
            mailbox("hostmaster@example.com").unwrap(),
            n("hostmaster.example.com.")
        );
        assert_eq!(
            mailbox("hostmaster.example.com").unwrap(),
            n("hostmaster.example.com.")
        );
        assert!(mailbox("first.last@example.com").is_err());
    }
}
