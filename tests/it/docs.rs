//! The docs a newcomer walks stay whole: the README is a front page that reaches every
//! guide, and the pages that map the code name everything in it (every kind, every module
//! under src/, every program under testenv/, every hook a kind supplies).

use std::path::{Path, PathBuf};

use crate::support;

fn read(path: &str) -> String {
    std::fs::read_to_string(support::repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every file under `dir` (recursively), relative to `root`, with `/` between parts.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path: PathBuf = entry.path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn the_readme_is_a_front_page_that_reaches_every_guide() {
    let _timer = crate::timed!();
    let readme = read("README.md");
    let lines = readme.lines().count();
    assert!(lines <= 200, "README.md has {lines} lines: keep it a front page, and move guides to docs/");
    for wanted in ["make demo", "make test", "kubectl get s3connect"] {
        assert!(readme.contains(wanted), "the README's quick start does not show `{wanted}`");
    }
    let root = support::repo_root();
    let mut pages = Vec::new();
    files_under(root, &root.join("docs"), &mut pages);
    let unlinked: Vec<&String> =
        pages.iter().filter(|p| p.ends_with(".md")).filter(|p| !readme.contains(&format!("({p}"))).collect();
    assert!(unlinked.is_empty(), "pages the README does not link to: {unlinked:?}");
}

#[test]
fn the_architecture_page_names_every_kind_and_every_module() {
    let _timer = crate::timed!();
    let page = read("docs/architecture.md");
    for crd in s3connect::api::crds() {
        let kind = &crd.spec.names.kind;
        assert!(page.contains(&format!("`{kind}`")), "docs/architecture.md does not name the kind {kind}");
    }
    let src = support::repo_root().join("src");
    let mut modules = Vec::new();
    files_under(&src, &src, &mut modules);
    let unnamed: Vec<&String> = modules.iter().filter(|m| !page.contains(&format!("`{m}`"))).collect();
    assert!(unnamed.is_empty(), "modules docs/architecture.md does not name: {unnamed:?}");
}

#[test]
fn the_test_environment_page_names_every_program() {
    let _timer = crate::timed!();
    let page = read("docs/test-environment.md");
    let testenv = support::repo_root().join("testenv");
    let mut unnamed = Vec::new();
    for entry in std::fs::read_dir(&testenv).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "__pycache__" {
            continue;
        }
        if entry.path().is_dir() {
            // A folder of programs: each is named as `folder/program`.
            for inner in std::fs::read_dir(entry.path()).unwrap().flatten() {
                let program = format!("{name}/{}", inner.file_name().to_string_lossy());
                if !page.contains(&format!("`{program}`")) {
                    unnamed.push(program);
                }
            }
        } else if !page.contains(&format!("`{name}`")) {
            unnamed.push(name);
        }
    }
    assert!(unnamed.is_empty(), "programs under testenv/ docs/test-environment.md does not name: {unnamed:?}");
}

#[test]
fn the_adding_a_kind_page_names_every_hook_of_the_driver() {
    let _timer = crate::timed!();
    let page = read("docs/adding-a-kind.md");
    let driver = read("src/controller/driver.rs");
    let mut hooks: Vec<&str> = Vec::new();
    for name in ["pub trait PlatformObject", "pub trait Hooks"] {
        let start = driver.find(name).unwrap_or_else(|| panic!("driver.rs defines {name}"));
        let body = &driver[start..start + driver[start..].find("\n}\n").expect("the trait ends")];
        hooks.extend(
            body.lines()
                .map(str::trim)
                .filter_map(|l| {
                    l.strip_prefix("fn ").or_else(|| l.strip_prefix("const ")).or_else(|| l.strip_prefix("type "))
                })
                .filter_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')).next()),
        );
    }
    assert!(hooks.len() >= 12, "found too few hooks in PlatformObject and Hooks: {hooks:?}");
    let unnamed: Vec<&&str> =
        hooks.iter().filter(|h| **h != "Status").filter(|h| !page.contains(&format!("`{h}`"))).collect();
    assert!(unnamed.is_empty(), "hooks of the driver docs/adding-a-kind.md does not name: {unnamed:?}");
}
