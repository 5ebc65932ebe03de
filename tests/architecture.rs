//! The house rules of `src/`, checked on every test run: the top-level
//! modules form layers along the request's path, each module imports only
//! modules below it (so there is no import cycle), and no file holds more
//! than `MAX_CODE_LINES` lines of code (a trailing `#[cfg(test)]` module
//! does not count). A failure names the offending reference or file.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The top-level modules, from the top of the path down. A module may import
/// only modules in later rows; modules in one row may not import each other.
const LAYERS: &[&[&str]] = &[
    &["cli"],
    &["server"],
    &["http"],
    &["runtime"],
    &["pipeline"],
    &["route"],
    &["provider", "tools"],
    &["upstream"],
    &["auth", "metrics"],
    &["cluster"],
    &["store"],
    &["wire"],
    &["error"],
    &["config", "body"],
];

const MAX_CODE_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to; None for the crate root and the binary.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        _ => Some(first.trim_end_matches(".rs").to_owned()),
    }
}

/// The code of a file without comments and without a trailing test module.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .iter()
        .enumerate()
        .position(|(i, l)| {
            l.trim() == "#[cfg(test)]"
                && lines
                    .get(i + 1)
                    .is_some_and(|next| next.trim_start().starts_with("mod "))
        })
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with("//"))
        .collect()
}

/// Every top-level module a line names through `crate::`, including the
/// members of a `crate::{a, b::c}` group.
fn crate_refs(line: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0;
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push(ident(&group[start..i]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push(ident(&group[start..i]));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push(ident(after));
        }
        rest = after;
    }
    out.retain(|m| !m.is_empty() && m != "self");
    out
}

fn ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

fn level(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

struct Reference {
    from: String,
    to: String,
    place: String,
}

/// References between top-level modules, through `crate::` paths.
fn references() -> Vec<Reference> {
    collect(module_of, |_, line| crate_refs(line))
}

/// Every reference between two nodes of a graph, with where it is written:
/// `node_of` names the node a file belongs to (None: not in the graph),
/// `targets` the nodes one line of that file names.
fn collect(
    node_of: impl Fn(&Path) -> Option<String>,
    targets: impl Fn(&Path, &str) -> Vec<String>,
) -> Vec<Reference> {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    files.sort();
    let mut out = vec![];
    for file in files {
        let Some(from) = node_of(&file) else {
            continue;
        };
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in code_lines(&text) {
            for to in targets(&file, line) {
                if to != from {
                    out.push(Reference {
                        from: from.clone(),
                        to,
                        place: format!(
                            "{}:{n}: {line}",
                            file.strip_prefix(src()).unwrap().display()
                        ),
                    });
                }
            }
        }
    }
    out
}

#[test]
fn every_module_is_in_a_layer() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let undeclared: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_of(f))
        .filter(|m| level(m).is_none())
        .collect();
    assert!(
        undeclared.is_empty(),
        "top-level modules missing from LAYERS in tests/architecture.rs: {undeclared:?}"
    );
}

#[test]
fn modules_import_only_modules_below_them() {
    let against: Vec<String> = references()
        .into_iter()
        .filter(|r| match (level(&r.from), level(&r.to)) {
            (Some(from), Some(to)) => to <= from,
            _ => false,
        })
        .map(|r| format!("{} -> {}  ({})", r.from, r.to, r.place))
        .collect();
    assert!(
        against.is_empty(),
        "imports against the layer order (a module may use only modules listed after it):\n{}",
        against.join("\n")
    );
}

#[test]
fn the_module_graph_has_no_cycle() {
    assert_no_cycle("import cycle between top-level modules", references());
}

#[test]
fn the_submodules_of_each_module_have_no_cycle() {
    let refs = submodule_references();
    assert!(
        refs.iter()
            .any(|r| r.from == "pipeline::compress" && r.to == "pipeline::failover"),
        "the compression hook plugs into the attempt loop"
    );
    assert_no_cycle("import cycle between submodules", refs);
}

fn assert_no_cycle(what: &str, refs: Vec<Reference>) {
    let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in refs {
        graph
            .entry(r.from)
            .or_default()
            .entry(r.to)
            .or_insert(r.place);
    }
    // Depth-first search; a back edge closes a cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeMap<String, String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|edges| edges.keys()) {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut vec![], &mut done) {
            let places: Vec<&str> = cycle
                .windows(2)
                .map(|pair| graph[&pair[0]][&pair[1]].as_str())
                .collect();
            panic!("{what} {}:\n{}", cycle.join(" -> "), places.join("\n"));
        }
    }
}

/// The module path of a file: `pipeline/compress/fit.rs` -> [pipeline, compress, fit].
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut path: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    path
}

/// Whether `path` names a module (a file or a folder), not an item in one.
fn is_module(path: &[String]) -> bool {
    let base = path.iter().fold(src(), |p, seg| p.join(seg));
    base.with_extension("rs").is_file() || base.join("mod.rs").is_file()
}

/// References between the submodules of one top-level module (`pipeline::compress`
/// -> `pipeline::failover`), through `crate::` and `super::` paths. A
/// top-level module's own file (its `mod.rs`) only declares and re-exports,
/// so references to and from it are left out.
fn submodule_references() -> Vec<Reference> {
    let node_of = |file: &Path| {
        let here = module_path(file);
        (here.len() >= 2 && module_of(file).is_some()).then(|| here[..2].join("::"))
    };
    collect(node_of, |file, line| {
        let here = module_path(file);
        paths(line, &here)
            .into_iter()
            .filter(|path| path.len() >= 2 && path[0] == here[0] && is_module(&path[..2]))
            .map(|path| path[..2].join("::"))
            .collect()
    })
}

/// The absolute module paths a line names (`crate::a::b`, `super::super::c`),
/// resolved from the module `here`; for a `{...}` group, its first member.
fn paths(line: &str, here: &[String]) -> Vec<Vec<String>> {
    let mut out = vec![];
    for (at, _) in line
        .match_indices("crate::")
        .chain(line.match_indices("super::"))
    {
        // Only where a path starts, not inside one (`super::super::`).
        if line[..at].ends_with("::") {
            continue;
        }
        let mut rest = &line[at..];
        let mut base: Vec<String> = if let Some(r) = rest.strip_prefix("crate::") {
            rest = r;
            vec![]
        } else {
            let mut up = here.to_vec();
            while let Some(r) = rest.strip_prefix("super::") {
                up.pop();
                rest = r;
            }
            up
        };
        let rest = rest.trim_start_matches('{');
        for seg in rest.split("::") {
            let seg = ident(seg);
            if seg.is_empty() || seg.starts_with(|c: char| c.is_ascii_uppercase()) {
                break;
            }
            base.push(seg);
        }
        out.push(base);
    }
    out
}

#[test]
fn no_file_is_over_the_line_limit() {
    let mut files = vec![];
    rust_files(&src(), &mut files);
    let over: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = code_lines(&fs::read_to_string(f).unwrap()).len();
            (n > MAX_CODE_LINES).then(|| {
                format!(
                    "{}: {n} lines of code",
                    f.strip_prefix(src()).unwrap().display()
                )
            })
        })
        .collect();
    assert!(
        over.is_empty(),
        "files over {MAX_CODE_LINES} lines of code (split them by concern):\n{}",
        over.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The rules above pass trivially if the parsing finds nothing: pin it.
    assert_eq!(
        crate_refs("use crate::{body::Body, error::{ApiError, UpstreamError}, self};"),
        ["body", "error"]
    );
    assert_eq!(
        crate_refs("let x = crate::wire::sse::data(crate::body::full(b));"),
        ["wire", "body"]
    );
    let code =
        code_lines("use a;\n// note\n\nfn f() {}\n#[cfg(test)]\nmod tests {\n fn t() {}\n}\n");
    assert_eq!(code, [(1, "use a;"), (4, "fn f() {}")]);
    let here: Vec<String> = ["pipeline", "failover", "hooks"].map(String::from).to_vec();
    assert_eq!(
        paths("use super::super::exchange::{Exchange, Report};", &here),
        [["pipeline", "exchange"]]
    );
    assert_eq!(
        paths("use crate::pipeline::compress::fit::FitHook;", &here),
        [["pipeline", "compress", "fit"]]
    );
    let refs = references();
    assert!(
        refs.iter().any(|r| r.from == "http" && r.to == "pipeline"),
        "the edge sends exchanges down the pipeline"
    );
    assert!(refs.len() > 50, "{} references found", refs.len());
}
