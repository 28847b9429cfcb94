//! What the upstream request's headers become: the request as it arrived, less every caller
//! copy of a header the filter strips or writes, plus the headers the filter writes.
//!
//! Each edit is a host call, and so is each header read; in Envoy's V8 reading all headers
//! at once costs more than a tenth of a whole proxied request (`docs/bench.md`). So the
//! filter does not look before it writes: a written header is set, which in Envoy replaces
//! every copy the caller sent (`setCopy`), and a header only to strip is removed.

/// One change to the request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit<'a> {
    /// Replace every copy of the header with this one value (or add it).
    Set(&'a str, &'a str),
    /// Remove every copy of the header.
    Remove(&'a str),
}

/// The edits that leave each header of `set` once with its value and no header of `strip`
/// unless it is in `set`. Names compare without regard to case. An iterator: every allowed
/// request runs this, and it need not allocate.
pub fn edits<'a>(
    strip: &'a [String],
    set: &'a [(String, String)],
) -> impl Iterator<Item = Edit<'a>> + 'a {
    let sets = set.iter().map(|(n, v)| Edit::Set(n, v));
    let removes = strip
        .iter()
        .filter(|name| !set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)))
        .map(|name| Edit::Remove(name));
    sets.chain(removes)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            edits(&strip, &set).collect::<Vec<_>>(),
            vec![
                Edit::Set("Issuer_Header", "https://i"),
                Edit::Set("authorization", "Bearer t"),
                Edit::Remove("x-subject"),
            ]
        );
        assert_eq!(
            edits(&strip, &[]).collect::<Vec<_>>(),
            vec![
                Edit::Remove("authorization"),
                Edit::Remove("issuer_header"),
                Edit::Remove("x-subject"),
            ]
        );
    }
}
