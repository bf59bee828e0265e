//! The S3 XML the probes read and write: error answers, a bucket's location, a listing's
//! keys and a CORS configuration. Reading is lenient (what a field does not say is empty)
//! and never fails: a store answering something else yields no keys, no rules.

use aws_smithy_xml::decode::{Document, ScopedDecoder, try_data};
use aws_smithy_xml::encode::XmlWriter;

use super::cors::CorsRule;

/// The `Code` and `Message` of an S3 error answer (`<Error>`, or `<ErrorResponse><Error>`
/// as some compatible stores nest it).
pub fn error(body: &[u8]) -> (Option<String>, Option<String>) {
    let text = String::from_utf8_lossy(body);
    let mut doc = Document::new(&text);
    let Ok(mut root) = doc.root_element() else { return (None, None) };
    let (mut code, mut message) = (None, None);
    read_error(&mut root, &mut code, &mut message, 0);
    (code, message)
}

fn read_error(scope: &mut ScopedDecoder<'_, '_>, code: &mut Option<String>, message: &mut Option<String>, depth: u8) {
    while let Some(mut tag) = scope.next_tag() {
        match tag.start_el().local() {
            "Code" => *code = try_data(&mut tag).ok().map(|c| c.trim().to_owned()).filter(|c| !c.is_empty()),
            "Message" => *message = try_data(&mut tag).ok().map(|m| m.trim().to_owned()),
            "Error" if depth == 0 => read_error(&mut tag, code, message, 1),
            _ => {}
        }
    }
}

/// The location constraint of a GetBucketLocation answer (empty for us-east-1).
pub fn location(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut doc = Document::new(&text);
    let Ok(mut root) = doc.root_element() else { return String::new() };
    try_data(&mut root).map(|c| c.trim().to_owned()).unwrap_or_default()
}

/// The keys of a ListObjectsV2 answer, in order.
pub fn keys(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    let mut doc = Document::new(&text);
    let Ok(mut root) = doc.root_element() else { return Vec::new() };
    let mut keys = Vec::new();
    while let Some(mut contents) = root.next_tag() {
        if contents.start_el().local() != "Contents" {
            continue;
        }
        while let Some(mut field) = contents.next_tag() {
            if field.start_el().local() == "Key"
                && let Ok(key) = try_data(&mut field)
            {
                keys.push(key.into_owned());
            }
        }
    }
    keys
}

/// The rules of a GetBucketCors answer.
pub fn cors_rules(body: &[u8]) -> Vec<CorsRule> {
    let text = String::from_utf8_lossy(body);
    let mut doc = Document::new(&text);
    let Ok(mut root) = doc.root_element() else { return Vec::new() };
    let mut rules = Vec::new();
    while let Some(mut tag) = root.next_tag() {
        if tag.start_el().local() != "CORSRule" {
            continue;
        }
        let mut rule = CorsRule::default();
        while let Some(mut field) = tag.next_tag() {
            let name = field.start_el().local().to_owned();
            let Ok(value) = try_data(&mut field) else { continue };
            let value = value.trim().to_owned();
            match name.as_str() {
                "ID" => rule.id = Some(value),
                "AllowedOrigin" => rule.allowed_origins.push(value),
                "AllowedMethod" => rule.allowed_methods.push(value),
                "AllowedHeader" => rule.allowed_headers.push(value),
                "ExposeHeader" => rule.expose_headers.push(value),
                "MaxAgeSeconds" => rule.max_age_seconds = value.parse().ok(),
                _ => {}
            }
        }
        rules.push(rule);
    }
    rules
}

/// The body of a PutBucketCors request.
pub fn cors_configuration(rules: &[CorsRule]) -> String {
    let mut out = String::new();
    let mut writer = XmlWriter::new(&mut out);
    let mut config =
        writer.start_el("CORSConfiguration").write_ns("http://s3.amazonaws.com/doc/2006-03-01/", None).finish();
    for rule in rules {
        let mut el = config.start_el("CORSRule").finish();
        let mut field = |name: &str, value: &str| el.start_el(name).finish().data(value);
        if let Some(id) = &rule.id {
            field("ID", id);
        }
        for (name, values) in [
            ("AllowedOrigin", &rule.allowed_origins),
            ("AllowedMethod", &rule.allowed_methods),
            ("AllowedHeader", &rule.allowed_headers),
            ("ExposeHeader", &rule.expose_headers),
        ] {
            for value in values {
                field(name, value);
            }
        }
        if let Some(age) = rule.max_age_seconds {
            field("MaxAgeSeconds", &age.to_string());
        }
        el.finish();
    }
    config.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_their_code_and_message_however_nested() {
        let s3 = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>AccessDenied</Code><Message>Access &amp; more</Message><RequestId>1</RequestId></Error>"#;
        assert_eq!(error(s3.as_bytes()), (Some("AccessDenied".into()), Some("Access & more".into())));
        let nested = "<ErrorResponse><Error><Code>SlowDown</Code><Message>m</Message></Error></ErrorResponse>";
        assert_eq!(error(nested.as_bytes()), (Some("SlowDown".into()), Some("m".into())));
        assert_eq!(error(b""), (None, None));
        assert_eq!(error(b"<html>bad gateway</html>"), (None, None));
        assert_eq!(error(b"<Error><Code><b>x</b></Code>"), (None, None));
    }

    #[test]
    fn locations_and_listings_read_as_s3_writes_them() {
        let ns = r#"xmlns="http://s3.amazonaws.com/doc/2006-03-01/""#;
        assert_eq!(
            location(format!("<LocationConstraint {ns}>eu-west-1</LocationConstraint>").as_bytes()),
            "eu-west-1"
        );
        assert_eq!(location(format!("<LocationConstraint {ns}/>").as_bytes()), "");
        assert_eq!(location(b"not xml"), "");
        let listing = format!(
            "<ListBucketResult {ns}><Name>b</Name><Prefix>p/</Prefix><KeyCount>2</KeyCount>\
             <Contents><Key>p/a&amp;b.jpg</Key><Size>3</Size></Contents>\
             <Contents><Size>1</Size><Key>p/c.jpg</Key></Contents></ListBucketResult>"
        );
        assert_eq!(keys(listing.as_bytes()), ["p/a&b.jpg", "p/c.jpg"]);
        assert!(
            keys(format!("<ListBucketResult {ns}><KeyCount>0</KeyCount></ListBucketResult>").as_bytes()).is_empty()
        );
    }

    #[test]
    fn a_cors_configuration_reads_back_as_written() {
        let rules = vec![
            CorsRule {
                id: Some("s3connect-<x>&".into()),
                allowed_origins: vec!["https://pro.labellerr.com".into()],
                allowed_methods: vec!["GET".into(), "HEAD".into()],
                allowed_headers: vec!["*".into()],
                expose_headers: vec![],
                max_age_seconds: Some(3000),
            },
            CorsRule {
                id: None,
                allowed_origins: vec!["*".into()],
                allowed_methods: vec!["PUT".into()],
                allowed_headers: vec![],
                expose_headers: vec!["ETag".into()],
                max_age_seconds: None,
            },
        ];
        let xml = cors_configuration(&rules);
        assert!(
            xml.starts_with("<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><CORSRule>"),
            "{xml}"
        );
        assert!(xml.contains("<ID>s3connect-&lt;x&gt;&amp;</ID>"), "{xml}");
        assert_eq!(cors_rules(xml.as_bytes()), rules);
        assert!(cors_rules(b"<CORSConfiguration/>").is_empty());
    }
}
