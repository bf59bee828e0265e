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
    /// Accepts `s3://bucket/prefix/`, `bucket/prefix/`, `bucket/prefix` and `bucket`, where
    /// the bucket may also be an access point's ARN (`arn:aws:s3:region:account:accesspoint/name`).
    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let rest = uri.trim().strip_prefix("s3://").unwrap_or(uri.trim());
        let (bucket, prefix) = if rest.starts_with("arn:") {
            // The ARN holds one `/` of its own, before the access point's name.
            let split = rest.find("accesspoint/").and_then(|at| rest[at + 12..].find('/').map(|n| at + 12 + n));
            let (arn, prefix) = split.map_or((rest, ""), |n| (&rest[..n], &rest[n + 1..]));
            AccessPoint::parse(arn)?;
            (arn, prefix)
        } else {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            check_bucket(bucket)?;
            (bucket, prefix)
        };
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

    /// The access point the bucket is given as, if it is an ARN.
    pub fn access_point(&self) -> Option<AccessPoint<'_>> {
        AccessPoint::parse(&self.bucket).ok()
    }

    /// Whether requests go through an access point rather than to the bucket itself: then
    /// S3 answers GetBucketCors but refuses PutBucketCors.
    pub fn through_access_point(&self) -> bool {
        self.access_point().is_some()
    }

    /// The ARN of the bucket (or of the access point), in the partition of `region`.
    pub fn bucket_arn(&self, region: Option<&str>) -> String {
        match self.access_point() {
            Some(_) => self.bucket.clone(),
            None => format!("arn:{}:s3:::{}", partition(region), self.bucket),
        }
    }

    /// The ARN that covers every object under the prefix: the `/*` that policies written
    /// by hand so often miss. Through an access point: `<access point ARN>/object/<prefix>*`.
    pub fn objects_arn(&self, region: Option<&str>) -> String {
        match self.access_point() {
            Some(_) => format!("{}/object/{}*", self.bucket, iam_literal(&self.prefix)),
            None => format!("arn:{}:s3:::{}/{}*", partition(region), self.bucket, iam_literal(&self.prefix)),
        }
    }
}

/// An S3 access point ARN: `arn:<partition>:s3:<region>:<account>:accesspoint/<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessPoint<'a> {
    pub partition: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub name: &'a str,
}

impl<'a> AccessPoint<'a> {
    pub fn parse(arn: &'a str) -> Result<Self, UriError> {
        let bad = |why: &str| Err(UriError(format!("{arn:?} is not an access point ARN: {why}")));
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, partition, service, region, account, resource] = parts[..] else {
            return bad("write arn:aws:s3:<region>:<account id>:accesspoint/<name>");
        };
        if !matches!(partition, "aws" | "aws-cn" | "aws-us-gov") || service != "s3" {
            return bad("it must start arn:aws:s3:, arn:aws-cn:s3: or arn:aws-us-gov:s3:");
        }
        if partition != self::partition(Some(region)) || !super::error::looks_like_region(region) {
            return bad("its region is not a region of its partition");
        }
        if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
            return bad("the account id has 12 digits");
        }
        let Some(name) = resource.strip_prefix("accesspoint/") else {
            return bad("only access points (accesspoint/<name>) can stand for a bucket");
        };
        let edge_ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !(3..=50).contains(&name.len())
            || !name.bytes().all(|b| edge_ok(b) || b == b'-')
            || !edge_ok(name.as_bytes()[0])
            || !edge_ok(name.as_bytes()[name.len() - 1])
        {
            return bad("an access point name is 3-50 lowercase letters, digits and hyphens");
        }
        Ok(AccessPoint { partition, region, account, name })
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
    if bucket.ends_with("-s3alias") {
        // IAM policies cannot name an alias: the policy the operator shows would be wrong.
        return bad(
            "it is an access point's alias; give the access point's ARN instead (arn:aws:s3:<region>:<account id>:accesspoint/<name>)",
        );
    }
    if bucket.starts_with("xn--") || bucket.starts_with("sthree-") || bucket.ends_with("--ol-s3") {
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
            ("bucket--ol-s3", "reserves"),
            ("team-a-abcdefghijklmnopqrstuvwxyz0123-s3alias", "access point's ARN"),
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

    #[test]
    fn an_access_point_stands_for_its_bucket_with_its_own_arns() {
        let arn = "arn:aws:s3:eu-west-1:123456789012:accesspoint/team-a";
        let l = Location::parse(&format!("s3://{arn}/images")).unwrap();
        assert_eq!(l, loc(arn, "images/"));
        assert_eq!(l.to_string(), format!("s3://{arn}/images/"));
        let ap = l.access_point().unwrap();
        assert_eq!((ap.partition, ap.region, ap.account, ap.name), ("aws", "eu-west-1", "123456789012", "team-a"));
        assert_eq!(l.bucket_arn(Some("eu-west-1")), arn);
        assert_eq!(l.objects_arn(None), format!("{arn}/object/images/*"));
        assert_eq!(Location::parse(arn).unwrap(), loc(arn, ""));
        assert!(l.through_access_point());
        assert!(!loc("b", "").through_access_point());
        for (bad, why) in [
            ("arn:aws:s3:eu-west-1:123456789012:accesspoint", "accesspoint/<name>"),
            ("arn:aws:s3:eu-west-1", "write arn"),
            ("arn:aws:s3:eu-west-1:12345:accesspoint/ap", "12 digits"),
            ("arn:aws:s3:eu-west-1:123456789012:bucket/ap", "only access points"),
            ("arn:aws:s3:cn-north-1:123456789012:accesspoint/ap", "partition"),
            ("arn:aws:iam::123456789012:accesspoint/ap", "must start"),
            ("arn:aws:s3:eu-west-1:123456789012:accesspoint/Team", "lowercase"),
            ("arn:aws:s3:eu\nwest:123456789012:accesspoint/ap", "region"),
        ] {
            let err = Location::parse(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }
}
