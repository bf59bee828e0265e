//! Parsing and normalising a connection's `uri` into bucket and prefix. The CRD's CEL rule
//! refuses most bad input at admission; this is the complete check (IP-like names, `..`,
//! reserved prefixes and suffixes) that CEL cannot express readably.

use std::fmt;

/// A bucket and a key prefix that is empty or ends in `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub bucket: String,
    pub prefix: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UriError(String);

impl Location {
    /// Accepts `s3://bucket/prefix/`, `bucket/prefix/`, `bucket/prefix` and `bucket`.
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri.trim().strip_prefix("s3://").unwrap_or(uri.trim());
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket)?;
        if prefix.starts_with('/') || prefix.contains("//") {
            return Err(UriError(format!("the prefix of {uri:?} has an empty segment (//): remove the extra slash")));
        }
        if prefix.split('/').any(|segment| segment == "." || segment == "..") {
            return Err(UriError(format!(
                "the prefix of {uri:?} has a '.' or '..' segment, which S3 keys do not resolve: write the folder's real path"
            )));
        }
        if prefix.chars().any(char::is_control) {
            return Err(UriError(format!("the prefix of {uri:?} has a control character: remove it")));
        }
        let prefix = if prefix.is_empty() || prefix.ends_with('/') { prefix.to_owned() } else { format!("{prefix}/") };
        Ok(Location { bucket: bucket.to_owned(), prefix })
    }

    /// The ARN of the bucket, in the partition of `region`.
    pub fn bucket_arn(&self, region: Option<&str>) -> String {
        format!("arn:{}:s3:::{}", partition(region), self.bucket)
    }

    /// The ARN that covers every object under the prefix: the `/*` that policies written
    /// by hand so often miss.
    pub fn objects_arn(&self, region: Option<&str>) -> String {
        format!("arn:{}:s3:::{}/{}*", partition(region), self.bucket, iam_literal(&self.prefix))
    }
}

/// `text` as a literal in an IAM policy: `*`, `?` and `$` in a key prefix are wildcards
/// and policy variables to IAM (`ima*/` would cover `images/` and `imax/`, `${aws:username}/`
/// each user's own folder), so each is written as IAM's escape for it (`${*}`, `${?}`,
/// `${$}`). A policy for a prefix is then never broader than the prefix.
pub fn iam_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '*' => out.push_str("${*}"),
            '?' => out.push_str("${?}"),
            '$' => out.push_str("${$}"),
            c => out.push(c),
        }
    }
    out
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// The AWS partition a region belongs to.
pub fn partition(region: Option<&str>) -> &'static str {
    match region {
        Some(r) if r.starts_with("cn-") => "aws-cn",
        Some(r) if r.starts_with("us-gov-") => "aws-us-gov",
        _ => "aws",
    }
}

fn check_bucket(bucket: &str) -> Result<(), UriError> {
    let bad = |why: &str| Err(UriError(format!("{bucket:?} is not a valid bucket name: {why}")));
    if bucket.is_empty() {
        return bad("the uri has no bucket; write s3://bucket/prefix/");
    }
    if !(3..=63).contains(&bucket.len()) {
        return bad("a bucket name has 3 to 63 characters");
    }
    if !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("use only lowercase letters, digits, dots and hyphens");
    }
    let first_last_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if !first_last_ok(bucket.as_bytes()[0]) || !first_last_ok(bucket.as_bytes()[bucket.len() - 1]) {
        return bad("it must start and end with a letter or digit");
    }
    if bucket.contains("..") || bucket.contains(".-") || bucket.contains("-.") {
        return bad("dots must not be next to another dot or a hyphen");
    }
    if bucket.split('.').count() == 4 && bucket.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return bad("it must not look like an IP address");
    }
    if bucket.starts_with("xn--")
        || bucket.starts_with("sthree-")
        || bucket.ends_with("-s3alias")
        || bucket.ends_with("--ol-s3")
    {
        return bad("it uses a prefix or suffix that S3 reserves");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(bucket: &str, prefix: &str) -> Location {
        Location { bucket: bucket.into(), prefix: prefix.into() }
    }

    #[test]
    fn accepted_forms_normalise_to_bucket_and_slash_terminated_prefix() {
        for (uri, want) in [
            ("s3://my-bucket/images/", loc("my-bucket", "images/")),
            ("s3://my-bucket/images", loc("my-bucket", "images/")),
            ("my-bucket/images/", loc("my-bucket", "images/")),
            ("my-bucket/a/b/c", loc("my-bucket", "a/b/c/")),
            ("my-bucket", loc("my-bucket", "")),
            ("my-bucket/", loc("my-bucket", "")),
            ("s3://my-bucket", loc("my-bucket", "")),
            ("s3://my.bucket.v2/x/", loc("my.bucket.v2", "x/")),
            ("  s3://abc/p/  ", loc("abc", "p/")),
        ] {
            assert_eq!(Location::parse(uri), Ok(want), "{uri}");
        }
    }

    #[test]
    fn display_is_the_normalised_uri() {
        assert_eq!(Location::parse("my-bucket/images").unwrap().to_string(), "s3://my-bucket/images/");
        assert_eq!(Location::parse("my-bucket").unwrap().to_string(), "s3://my-bucket/");
    }

    #[test]
    fn invalid_bucket_names_are_refused_with_the_rule_they_break() {
        for (uri, why) in [
            ("", "no bucket"),
            ("s3://", "no bucket"),
            ("/images/", "no bucket"),
            ("ab", "3 to 63"),
            (&"a".repeat(64), "3 to 63"),
            ("My-Bucket", "lowercase"),
            ("my_bucket", "lowercase"),
            ("-bucket", "start and end"),
            ("bucket-", "start and end"),
            ("my..bucket", "next to another dot"),
            ("my.-bucket", "next to another dot"),
            ("192.168.5.4", "IP address"),
            ("xn--bucket", "reserves"),
            ("bucket-s3alias", "reserves"),
        ] {
            let err = Location::parse(uri).expect_err(uri).to_string();
            assert!(err.contains(why), "{uri:?}: {err}");
        }
    }

    #[test]
    fn empty_prefix_segments_are_refused() {
        for uri in ["my-bucket//images/", "my-bucket/a//b/", "s3://my-bucket//"] {
            let err = Location::parse(uri).expect_err(uri).to_string();
            assert!(err.contains("empty segment"), "{uri}: {err}");
        }
    }

    #[test]
    fn dot_segments_and_control_characters_are_refused() {
        for uri in ["b-1/./x/", "b-1/../x", "s3://b-1/a/..", "b-1/.", "b-1/a/\u{7f}/", "b-1/\nx/"] {
            assert!(Location::parse(uri).is_err(), "{uri:?}");
        }
        assert_eq!(Location::parse("b-1/.hidden/..x/").unwrap().prefix, ".hidden/..x/");
    }

    #[test]
    fn arns_cover_bucket_and_objects_under_the_prefix_in_the_right_partition() {
        let l = loc("b", "p/");
        assert_eq!(l.bucket_arn(Some("eu-west-1")), "arn:aws:s3:::b");
        assert_eq!(l.objects_arn(None), "arn:aws:s3:::b/p/*");
        assert_eq!(loc("b", "").objects_arn(Some("cn-north-1")), "arn:aws-cn:s3:::b/*");
        // IAM's wildcards and policy variables in a prefix are literals in the policy.
        assert_eq!(loc("b", "ima*/").objects_arn(None), "arn:aws:s3:::b/ima${*}/*");
        assert_eq!(loc("b", "a?b/").objects_arn(None), "arn:aws:s3:::b/a${?}b/*");
        assert_eq!(loc("b", "${aws:username}/").objects_arn(None), "arn:aws:s3:::b/${$}{aws:username}/*");
        assert_eq!(iam_literal("plain/prefix/"), "plain/prefix/");
        assert_eq!(l.bucket_arn(Some("us-gov-west-1")), "arn:aws-us-gov:s3:::b");
    }
}
