//! What the upstream request's headers become: the request as it arrived, less every caller
//! copy of a header the filter strips or writes, plus the headers the filter writes.
//!
//! Each edit is a host call, and so is each header read; in Envoy's V8 reading all headers
//! at once (0.88 µs) costs more than the removals it would spare (0.11 µs each: the
//! `host call:` rows in `docs/bench.md`). So the filter does not look before it writes: a written header is set, which in Envoy replaces
//! every copy the caller sent (`setCopy`), and a header only to strip is removed.

/// Header names an upstream reads as `name`: any case (Envoy compares names without case)
/// and `_` for `-` or back (CGI, WSGI and Rack fold both into `HTTP_X_SUBJECT`). Lower case,
/// `name`'s own spelling first. `None` when a name has more separators than is reasonable to
/// enumerate (2^n spellings for n separators).
pub fn spellings(name: &str) -> Option<Vec<String>> {
    let lower = name.to_ascii_lowercase();
    let separators: Vec<usize> = lower
        .bytes()
        .enumerate()
        .filter(|(_, b)| *b == b'-' || *b == b'_')
        .map(|(i, _)| i)
        .collect();
    if separators.len() > MAX_SEPARATORS {
        return None;
    }
    let mut out = vec![lower.clone()];
    for mask in 0u32..(1 << separators.len()) {
        let mut bytes = lower.clone().into_bytes();
        for (bit, &at) in separators.iter().enumerate() {
            if let Some(b) = bytes.get_mut(at) {
                *b = if mask & (1 << bit) != 0 { b'_' } else { b'-' };
            }
        }
        let spelled = String::from_utf8(bytes).unwrap_or_default();
        if !out.contains(&spelled) {
            out.push(spelled);
        }
    }
    Some(out)
}

/// The most `-` or `_` a header name the filter writes may have.
pub const MAX_SEPARATORS: usize = 4;

use crate::outcome::Grant;

/// One change to the request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Replace every copy of the header with this one value (or add it).
    Set(&'a str, &'a str),
    /// Remove every copy of the header.
    Remove(&'a str),
}

/// The names of `strip` that `set` does not set (names compare without regard to case).
pub fn removals<'a>(
    strip: &'a [String],
    set: &'a [(String, String)],
) -> impl Iterator<Item = &'a String> + 'a {
    strip
        .iter()
        .filter(|name| !set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
}

/// The edits that leave each header of `grant` once with its value and no header of
/// `strip` unless the grant sets it. An iterator: every allowed request runs this, and it
/// need not allocate.
pub fn edits<'a>(strip: &'a [String], grant: &'a Grant) -> impl Iterator<Item = Edit<'a>> + 'a {
    let sets = grant.headers.iter().map(|(n, v)| Edit::Set(n, v));
    // One of the two is empty: the grant's own list, or the strip list still to filter.
    let (planned, unplanned): (&[String], &[String]) = match grant.removes.as_deref() {
        Some(removes) => (removes, &[]),
        None => (&[], strip),
    };
    let removes = planned
        .iter()
        .chain(removals(unplanned, &grant.headers))
        .map(|name| Edit::Remove(name));
    sets.chain(removes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_an_upstream_folds_into_the_name() {
        assert_eq!(
            spellings("Authorization"),
            Some(vec!["authorization".into()])
        );
        assert_eq!(
            spellings("X-Subject"),
            Some(vec!["x-subject".into(), "x_subject".into()])
        );
        assert_eq!(
            spellings("Issuer_Header"),
            Some(vec!["issuer_header".into(), "issuer-header".into()])
        );
        let four = spellings("a-b_c-d_e").unwrap();
        assert_eq!(four.len(), 16);
        assert_eq!(four[0], "a-b_c-d_e");
        assert!(four.contains(&"a_b_c_d_e".to_string()) && four.contains(&"a-b-c-d-e".into()));
        assert_eq!(spellings("a-b-c-d-e-f"), None);
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn written_headers_are_set_and_the_rest_of_the_strip_list_removed() {
        let strip: Vec<String> = ["authorization", "issuer_header", "x-subject"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let set = owned(&[
            ("Issuer_Header", "https://i"),
            ("authorization", "Bearer t"),
        ]);
        let want = vec![
            Edit::Set("Issuer_Header", "https://i"),
            Edit::Set("authorization", "Bearer t"),
            Edit::Remove("x-subject"),
        ];
        let worked_out_now = Grant {
            headers: set.clone().into(),
            ..Grant::default()
        };
        assert_eq!(edits(&strip, &worked_out_now).collect::<Vec<_>>(), want);
        let planned = Grant {
            removes: Some(removals(&strip, &set).cloned().collect()),
            ..worked_out_now
        };
        assert_eq!(edits(&strip, &planned).collect::<Vec<_>>(), want);
        assert_eq!(
            edits(&strip, &Grant::default()).collect::<Vec<_>>(),
            vec![
                Edit::Remove("authorization"),
                Edit::Remove("issuer_header"),
                Edit::Remove("x-subject"),
            ]
        );
    }
}
