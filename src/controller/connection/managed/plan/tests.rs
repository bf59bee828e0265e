//! Each state IAM and the Secret can be in: the facts, the IAM writes in order, or the
//! refusal with its reason and the remedy's key words.

use std::collections::BTreeMap;

use super::*;

const DAY: i64 = 86_400;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn key(id: &str, created: i64) -> KeyInfo {
    KeyInfo { id: id.into(), created: at(created).as_second() }
}

fn wanted() -> serde_json::Value {
    serde_json::json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"]}]})
}

/// A user as the operator leaves it: its tags, `keys`, and the wanted policy.
fn user(keys: Vec<KeyInfo>) -> Held {
    Held { tags: BTreeMap::from([(TAG_DELETION_POLICY.to_owned(), "Delete".to_owned())]), keys, policy: Some(wanted()) }
}

/// The facts of a connection whose Secret holds `held_key`, a day after that key was made
/// (90 days between rotations, an hour between keys at the least), nothing asked.
fn facts<'a>(held: Option<&'a Held>, secret: Option<SecretFacts<'a>>, policy: &'a serde_json::Value) -> Facts<'a> {
    Facts {
        user: "team-a.images",
        secret_name: "images-s3connect-managed",
        namespace: "team-a",
        secret,
        held,
        others: 0,
        max_per_namespace: 3,
        wanted_policy: policy,
        deletion_policy: "Delete",
        rotation: Duration::from_secs(90 * DAY as u64),
        min_rotation_interval: Duration::from_secs(3600),
        rotate_asked: None,
        delivered: None,
        now: at(DAY),
    }
}

fn holding(id: &str) -> Option<SecretFacts<'_>> {
    Some(SecretFacts { key_id: Some(id), handled: None })
}

fn refused(result: Result<Plan, Refusal>, reason: Reason, words: &[&str]) {
    let (got, message) = result.expect_err("refused");
    assert_eq!(got, reason, "{message}");
    for w in words {
        assert!(message.contains(w), "{w:?} missing from {message:?}");
    }
}

#[test]
fn a_new_connection_gets_a_user_its_policy_and_a_key() {
    let policy = wanted();
    let p = plan(&facts(None, None, &policy)).unwrap();
    assert_eq!(p.steps, [Step::EnsureUser, Step::PutPolicy, Step::CreateKey]);
    assert!(!p.policy_spaced, "a first policy is put at once");
    assert!(!p.rotate && p.key_created.is_none() && p.handled.is_none());
}

#[test]
fn a_current_user_and_key_need_nothing() {
    let (policy, held) = (wanted(), user(vec![key("AKIA1", 0)]));
    let p = plan(&facts(Some(&held), holding("AKIA1"), &policy)).unwrap();
    assert_eq!(p.steps, []);
    assert_eq!(p.key_created, Some(at(0)));
}

#[test]
fn a_policy_iam_holds_that_differs_is_put_again_and_spaced() {
    let held = user(vec![key("AKIA1", 0)]);
    let narrower = serde_json::json!({"Version": "2012-10-17", "Statement": []});
    let p = plan(&facts(Some(&held), holding("AKIA1"), &narrower)).unwrap();
    assert_eq!(p.steps, [Step::PutPolicy]);
    assert!(p.policy_spaced);
    // A policy deleted in IAM (by a person, or a revocation) is put back at once.
    let bare = Held { policy: None, ..held.clone() };
    let p = plan(&facts(Some(&bare), holding("AKIA1"), &narrower)).unwrap();
    assert_eq!((p.steps, p.policy_spaced), (vec![Step::PutPolicy], false));
}

#[test]
fn a_deletion_policy_iam_does_not_record_corrects_the_users_tags() {
    let (policy, held) = (wanted(), user(vec![key("AKIA1", 0)]));
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.deletion_policy = "Retain";
    assert_eq!(plan(&f).unwrap().steps, [Step::EnsureUser]);
}

#[test]
fn a_secret_holding_no_key_iam_lists_is_a_conflict_never_written_to() {
    let policy = wanted();
    let held = user(vec![key("AKIA1", 0)]);
    for (held, secret) in
        [(Some(&held), holding("AKIAFORGED")), (Some(&held), Some(SecretFacts::default())), (None, holding("AKIA1"))]
    {
        refused(
            plan(&facts(held, secret, &policy)),
            Reason::ManagedResourceConflict,
            &["\"images-s3connect-managed\"", "holds no access key of IAM user \"team-a.images\"", "Delete the Secret"],
        );
    }
}

#[test]
fn a_new_user_past_the_namespaces_quota_is_refused_and_an_existing_one_is_not() {
    let policy = wanted();
    let mut f = facts(None, None, &policy);
    f.others = 3;
    refused(plan(&f), Reason::ManagedQuotaExceeded, &["\"team-a\" has 3 IAM users", "at most 3", "secretRef"]);
    let held = user(vec![key("AKIA1", 0)]);
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.others = 3;
    assert!(plan(&f).is_ok(), "the quota counts only users about to be made");
}

#[test]
fn a_key_as_old_as_the_rotation_interval_is_replaced_after_the_stray_keys_go() {
    let policy = wanted();
    // AKIA0 was made but never reached the Secret (an answer lost): it goes first.
    let held = user(vec![key("AKIA0", 5), key("AKIA1", 0)]);
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.now = at(90 * DAY);
    let p = plan(&f).unwrap();
    assert_eq!(p.steps, [Step::DeleteKey("AKIA0".into()), Step::CreateKey]);
    assert!(p.rotate);
    f.now = at(90 * DAY - 1);
    assert_eq!(plan(&f).unwrap().steps, [], "a day younger than the interval");
}

#[test]
fn an_asked_rotation_is_made_once_and_recorded_as_handled() {
    let (policy, held) = (wanted(), user(vec![key("AKIA1", 0)]));
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.rotate_asked = Some("2026-12-08T10:00:00Z");
    let p = plan(&f).unwrap();
    assert_eq!((p.steps.as_slice(), p.rotate), ([Step::CreateKey].as_slice(), true));
    assert_eq!(p.handled.as_deref(), Some("2026-12-08T10:00:00Z"));
    // The Secret records the request as handled: nothing more, whatever copy of the
    // S3Connection the next reconcile sees.
    f.secret = Some(SecretFacts { key_id: Some("AKIA1"), handled: Some("2026-12-08T10:00:00Z") });
    let p = plan(&f).unwrap();
    assert_eq!((p.steps.len(), p.handled.as_deref()), (0, Some("2026-12-08T10:00:00Z")));
}

#[test]
fn an_asked_rotation_waits_for_the_least_interval_between_keys() {
    let (policy, held) = (wanted(), user(vec![key("AKIA1", DAY - 60)]));
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.rotate_asked = Some("again");
    let p = plan(&f).unwrap();
    assert_eq!(p.steps, []);
    assert_eq!(p.waits_until, Some(at(DAY - 60 + 3600)));
    assert_eq!(p.handled, None, "not handled while it waits");
    f.now = at(DAY - 60 + 3600);
    assert_eq!(plan(&f).unwrap().steps, [Step::CreateKey], "made once the interval has passed");
}

#[test]
fn a_key_due_by_age_is_not_held_back_by_the_interval_between_keys() {
    let policy = wanted();
    let held = user(vec![key("AKIA1", 0), key("AKIA0", 90 * DAY - 60)]);
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.now = at(90 * DAY);
    f.rotate_asked = Some("also asked");
    let p = plan(&f).unwrap();
    assert_eq!(p.steps, [Step::DeleteKey("AKIA0".into()), Step::CreateKey]);
    assert_eq!(p.waits_until, None);
}

#[test]
fn a_secret_deleted_in_a_loop_gets_no_key_before_the_least_interval() {
    let (policy, held) = (wanted(), user(vec![key("AKIA1", DAY - 60)]));
    // AKIA1 reached the Secret (the status says so), which was deleted since.
    let delivered = key_digest("AKIA1");
    let mut f = facts(Some(&held), None, &policy);
    f.delivered = Some(&delivered);
    refused(
        plan(&f),
        Reason::IamWritesSpaced,
        &["\"images-s3connect-managed\" is gone", "\"team-a.images\"", "no sooner"],
    );
    // An hour after the newest key: the stray key goes and a new one is made.
    f.now = at(DAY - 60 + 3600);
    assert_eq!(plan(&f).unwrap().steps, [Step::DeleteKey("AKIA1".into()), Step::CreateKey]);
}

#[test]
fn a_key_of_unknown_age_is_not_rotated_on_age_alone() {
    let ninety = Duration::from_secs(90 * DAY as u64);
    assert!(!rotation_due(Some(at(0)), at(90 * DAY - 1), ninety));
    assert!(rotation_due(Some(at(0)), at(90 * DAY), ninety));
    assert!(!rotation_due(None, at(1000 * DAY), ninety), "unknown age");
    assert!(!rotation_due(Some(at(10 * DAY)), at(0), ninety), "a clock behind the key's date");
}

#[test]
fn a_key_whose_answer_was_lost_is_replaced_at_once() {
    // AKIA2 was made a minute ago and never reached the Secret: nobody holds it.
    let (policy, held) = (wanted(), user(vec![key("AKIA2", DAY - 60)]));
    let delivered = key_digest("AKIA1");
    for delivered in [None, Some(delivered.as_str())] {
        let mut f = facts(Some(&held), None, &policy);
        f.delivered = delivered;
        let p = plan(&f).expect("not spaced: the lost key was nobody's");
        assert_eq!(p.steps, [Step::DeleteKey("AKIA2".into()), Step::CreateKey], "{delivered:?}");
    }
    // The digest names the key, not its value; two ids never share one here.
    assert_ne!(key_digest("AKIA1"), key_digest("AKIA2"));
    assert_eq!(key_digest("AKIA1").len(), 16);
}

#[test]
fn an_asked_rotation_whose_answer_was_lost_is_made_again_at_once() {
    // AKIA1 is in the Secret; AKIA2, made for the request a minute ago, never reached it.
    let (policy, held) = (wanted(), user(vec![key("AKIA1", 0), key("AKIA2", DAY - 60)]));
    let mut f = facts(Some(&held), holding("AKIA1"), &policy);
    f.rotate_asked = Some("now");
    let p = plan(&f).unwrap();
    assert_eq!(p.steps, [Step::DeleteKey("AKIA2".into()), Step::CreateKey]);
    assert_eq!((p.waits_until, p.handled.as_deref()), (None, Some("now")));
    assert_eq!(p.delivered, Some(key_digest("AKIA1")), "the key the Secret holds is the delivered one");
}
