//! The origin's layers, checked on its source (issue 15).
//!
//! `origin/src` is built in layers, each using only the ones below it:
//!
//! | layer | files | may use |
//! |---|---|---|
//! | 4 app | `app/` | everything below; imported only by `main.rs` and outside binaries |
//! | 3 api | `api/` | the engine, bus, base |
//! | 2 engine | `auth.rs`, `ingest/`, `fanout/`, `rides/`, `dispatch/`, `chat/`, `limits/` | one another, bus, base |
//! | 1 bus | `bus/` | base |
//! | 0 base | `base/` | nothing of the origin |
//!
//! (`ridecast_protocol` and other outside crates are below them all.) `lib.rs` and `main.rs` are
//! the roof: they may use anything, and nothing may reach up to them. And no two files, in
//! `origin/` or in `loadgen/`, may import each other in a circle, not even within one layer.
//!
//! The check reads the source itself: every `use` tree (`pub use` and nested braces included),
//! every path written in code (`crate::base::clock::now_ms()`, `super::connection::keep_whole`),
//! `#[cfg(test)]` modules too, and nothing in comments or literals. A path leads to the deepest
//! module file that exists: `crate::bus::Topic` to `bus/mod.rs`, `crate::bus::redis::RedisBackend`
//! to `bus/redis.rs`, and a name that file only re-exports to where it comes from (`crate::Config`
//! to `app/config.rs`). It needs nothing beyond `std`.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
};

// ------------------------------------------------------------------------------------------------
// The layers
// ------------------------------------------------------------------------------------------------

/// One of the origin's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layer {
    level: u8,
    name: &'static str,
    /// What the layer may use, as a rule reads.
    may_use: &'static str,
}

const APP: Layer =
    Layer { level: 4, name: "app", may_use: "app (layer 4) may use every layer, but not the crate root" };
const API: Layer = Layer { level: 3, name: "api", may_use: "api (layer 3) may use only the engine, bus and base" };
const ENGINE: Layer =
    Layer { level: 2, name: "engine", may_use: "the engine (layer 2) may use only itself, bus and base" };
const BUS: Layer = Layer { level: 1, name: "bus", may_use: "bus (layer 1) may use only base and ridecast_protocol" };
const BASE: Layer = Layer {
    level: 0,
    name: "base",
    may_use: "base (layer 0) may use only std and outside crates such as ridecast_protocol",
};

/// Where each file of `origin/src` stands: a folder (`"bus/"`) or a file (`"auth.rs"`).
const LAYERS: &[(&str, Layer)] = &[
    ("app/", APP),
    ("api/", API),
    ("auth.rs", ENGINE),
    ("ingest/", ENGINE),
    ("fanout/", ENGINE),
    ("rides/", ENGINE),
    ("dispatch/", ENGINE),
    ("chat/", ENGINE),
    ("limits/", ENGINE),
    ("bus/", BUS),
    ("base/", BASE),
];

/// The roof: it wires the layers together, and nothing below may reach up to it.
const ROOF: &[&str] = &["lib.rs", "main.rs"];

/// Where a file of `origin/src` (`"bus/redis.rs"`) stands.
enum Place {
    Roof,
    Layer(Layer),
    Nowhere,
}

fn place_of(file: &str) -> Place {
    if ROOF.contains(&file) {
        return Place::Roof;
    }
    LAYERS
        .iter()
        .find(|(place, _)| if place.ends_with('/') { file.starts_with(place) } else { file == *place })
        .map_or(Place::Nowhere, |(_, layer)| Place::Layer(*layer))
}

// ------------------------------------------------------------------------------------------------
// The checks
// ------------------------------------------------------------------------------------------------

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let origin = Crate::read("origin", "ridecast_origin");
    assert_reads_enough(&origin, 50);
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for file in origin.files.keys() {
        let layer = match place_of(file) {
            Place::Roof => continue,
            Place::Nowhere => {
                unplaced.push(format!("  origin/src/{file}: give it a layer in LAYERS (origin/tests/layers.rs)"));
                continue;
            }
            Place::Layer(layer) => layer,
        };
        for ((from, to), uses) in origin.edges.range((file.clone(), String::new())..) {
            if from != file {
                break;
            }
            let above = match place_of(to) {
                Place::Roof => format!("the roof ({to})"),
                Place::Layer(target) if target.level > layer.level => {
                    format!("{to} ({}, layer {})", target.name, target.level)
                }
                Place::Layer(_) | Place::Nowhere => continue,
            };
            upward.push(format!("  {from} imports {}: {}, not {above}", describe(uses), layer.may_use));
        }
    }
    let mut report = String::new();
    if !unplaced.is_empty() {
        let _ = writeln!(report, "{} file(s) stand on no layer:\n{}", unplaced.len(), unplaced.join("\n"));
    }
    if !upward.is_empty() {
        let _ = writeln!(report, "{} import(s) reach up to a layer above:\n{}", upward.len(), upward.join("\n"));
    }
    assert!(
        report.is_empty(),
        "each file of origin/src must stand on a layer and use only the layers below it \
         (app 4 > api 3 > engine 2 > bus 1 > base 0; lib.rs and main.rs are the roof).\n{report}"
    );
}

#[test]
fn files_import_each_other_without_circles() {
    let origin = Crate::read("origin", "ridecast_origin");
    assert_reads_enough(&origin, 50);
    assert_no_circles(&origin);
}

#[test]
fn loadgen_files_import_each_other_without_circles() {
    let loadgen = Crate::read("loadgen", "ridecast_loadgen");
    assert_reads_enough(&loadgen, 25);
    assert_no_circles(&loadgen);
}

/// So that a reader which finds nothing cannot pass the checks.
fn assert_reads_enough(krate: &Crate, at_least: usize) {
    assert!(
        krate.edges.len() >= at_least,
        "{}/src: expected at least {at_least} imports between files, found {}: the reader of `use` \
         trees and paths is broken",
        krate.name,
        krate.edges.len(),
    );
}

/// Circles shown per group: the shortest say enough to start cutting.
const SHOWN_CIRCLES: usize = 12;

fn assert_no_circles(krate: &Crate) {
    let groups = strongly_connected(&krate.edges);
    let mut report = String::new();
    for files in &groups {
        let _ = writeln!(report, "  {} files reach one another: {}", files.len(), files.join(", "));
        let _ = writeln!(report, "    circles (the shortest through each import):");
        let circles = shortest_circles(&krate.edges, files);
        for circle in circles.iter().take(SHOWN_CIRCLES) {
            let only_tests = circle
                .windows(2)
                .any(|pair| krate.edges[&(pair[0].clone(), pair[1].clone())].iter().all(|found| found.in_test));
            let note = if only_tests { "  (through test code)" } else { "" };
            let _ = writeln!(report, "      {}{note}", circle.join(" -> "));
        }
        if circles.len() > SHOWN_CIRCLES {
            let _ = writeln!(report, "      and {} more", circles.len() - SHOWN_CIRCLES);
        }
        let _ = writeln!(report, "    imports:");
        for ((from, to), uses) in &krate.edges {
            if files.contains(from) && files.contains(to) {
                let _ = writeln!(report, "      {from} -> {to}: {}", describe(uses));
            }
        }
    }
    assert!(
        groups.is_empty(),
        "{}/src: files must import each other without circles: a file may import another only if \
         that one does not reach back to it.\n{report}",
        krate.name,
    );
}

// ------------------------------------------------------------------------------------------------
// A crate's files and the imports between them
// ------------------------------------------------------------------------------------------------

/// One reference from a file to a module path of its crate.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    /// As written, from the crate root: `["fanout", "subscriptions", "Inbound"]`.
    written: Vec<String>,
    /// Where a `use` in the file it names leads it on, if one does: `crate::Config` to
    /// `crate::app::config::Config` through `lib.rs`.
    re_exported: Option<Vec<String>>,
    line: usize,
    /// In a `#[cfg(test)]` module.
    in_test: bool,
}

impl Found {
    fn describe(&self, from: usize) -> String {
        let path = self.written[from..].join("::");
        match &self.re_exported {
            Some(to) => format!("{path} (re-exported from {})", crate_path(to)),
            None => path,
        }
    }
}

fn crate_path(segments: &[String]) -> String {
    std::iter::once("crate").chain(segments.iter().map(String::as_str)).collect::<Vec<_>>().join("::")
}

/// What one file takes from another, a line at a time: `crate::rides::{Ride, RideChange} (line 23)`.
fn describe(uses: &[Found]) -> String {
    let mut lines: Vec<(usize, bool, Vec<&Found>)> = Vec::new();
    for found in uses {
        match lines.iter_mut().find(|(line, in_test, _)| *line == found.line && *in_test == found.in_test) {
            Some((_, _, on_line)) => on_line.push(found),
            None => lines.push((found.line, found.in_test, vec![found])),
        }
    }
    let described: Vec<String> = lines
        .iter()
        .map(|(line, in_test, on_line)| {
            let test = if *in_test { ", test code" } else { "" };
            let first = &on_line[0].written;
            let shared = (0..first.len())
                .take_while(|&k| {
                    on_line.iter().all(|found| found.written.len() > k + 1 && found.written[k] == first[k])
                })
                .count();
            let paths = if let [only] = on_line.as_slice() {
                format!("crate::{}", only.describe(0))
            } else {
                let tails: Vec<String> = on_line.iter().map(|found| found.describe(shared)).collect();
                format!("{}::{{{}}}", crate_path(&first[..shared]), tails.join(", "))
            };
            format!("{paths} (line {line}{test})")
        })
        .collect();
    described.join(", ")
}

/// The files of one crate's `src/` (`"bus/redis.rs"`) and the references between them.
#[derive(Debug)]
struct Crate {
    name: &'static str,
    /// Each file and the module it holds.
    files: BTreeMap<String, Vec<String>>,
    /// (from, to) -> what `from` takes from `to`, by line; never from a file to itself.
    edges: BTreeMap<(String, String), Vec<Found>>,
}

impl Crate {
    /// Reads `<workspace>/<folder>/src`; `lib_name` is how its binary names the library.
    fn read(folder: &'static str, lib_name: &str) -> Self {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(folder).join("src");
        let mut paths = Vec::new();
        rust_files(&src, &mut paths);
        let mut sources = BTreeMap::new();
        for path in paths {
            let file = path
                .strip_prefix(&src)
                .expect("a file found under src/")
                .to_str()
                .expect("file names are UTF-8")
                .replace('\\', "/");
            let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            sources.insert(file, text);
        }
        assert!(sources.contains_key("lib.rs"), "{folder}/src/lib.rs: expected a library crate at {}", src.display());
        let files: BTreeMap<String, Vec<String>> = sources.keys().map(|file| (file.clone(), module_of(file))).collect();
        let modules: BTreeMap<Vec<String>, String> = files
            .iter()
            .filter(|(file, _)| *file != "main.rs")
            .map(|(file, module)| (module.clone(), file.clone()))
            .collect();
        let readings: BTreeMap<&String, Reading> = sources
            .iter()
            .map(|(file, text)| {
                let unit =
                    Unit { module: files[file].clone(), binary_root: file == "main.rs", lib_name: lib_name.to_owned() };
                (file, read_source(text, &unit))
            })
            .collect();
        let mut edges: BTreeMap<(String, String), Vec<Found>> = BTreeMap::new();
        for (file, reading) in &readings {
            for reference in &reading.references {
                let target = re_export_of(&modules, &readings, &reference.target);
                let to = file_of(&modules, target.as_ref().unwrap_or(&reference.target));
                if to == **file {
                    continue;
                }
                let found = Found {
                    written: reference.target.clone(),
                    re_exported: target,
                    line: reference.line,
                    in_test: reference.in_test,
                };
                let uses = edges.entry(((*file).clone(), to)).or_default();
                // `Ride::new` says no more than `use crate::rides::Ride` did.
                let said = uses
                    .iter()
                    .any(|seen| found.written.starts_with(&seen.written) && (found.in_test || !seen.in_test));
                if !said {
                    uses.push(found);
                }
            }
        }
        for uses in edges.values_mut() {
            uses.sort_by_key(|found| found.line);
        }
        Self { name: folder, files, edges }
    }
}

/// Where `target` leads when the module file it names only imports (or re-exports) the name:
/// `crate::Config` is `lib.rs`'s `pub use app::config::Config`. `None` if it is defined there.
fn re_export_of(
    modules: &BTreeMap<Vec<String>, String>,
    readings: &BTreeMap<&String, Reading>,
    target: &[String],
) -> Option<Vec<String>> {
    let mut target = target.to_vec();
    let mut moved = false;
    // A bound, so that a name that leads back to itself cannot loop.
    for _ in 0..8 {
        let file = file_of(modules, &target);
        let depth = module_of(&file).len();
        let Some(next) = target.get(depth).and_then(|name| readings[&file].exports.get(name)) else {
            break;
        };
        let mut led = next.clone();
        led.extend(target[depth + 1..].iter().cloned());
        if led == target {
            break;
        }
        target = led;
        moved = true;
    }
    moved.then_some(target)
}

fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, into);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            into.push(path);
        }
    }
}

/// The module a file of `src/` holds: `lib.rs` the root, `bus/mod.rs` `bus`, `bus/redis.rs` `bus::redis`.
fn module_of(file: &str) -> Vec<String> {
    let file = file.strip_suffix(".rs").expect("a .rs file");
    let mut module: Vec<String> = file.split('/').map(str::to_owned).collect();
    if matches!(module.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        module.pop();
    }
    module
}

/// The deepest module file on `target`'s way: `bus::Topic` is in `bus/mod.rs`.
fn file_of(modules: &BTreeMap<Vec<String>, String>, target: &[String]) -> String {
    (0..=target.len())
        .rev()
        .find_map(|len| modules.get(&target[..len]))
        .expect("the crate root is always a module file")
        .clone()
}

/// The groups of two files or more that all reach one another (Tarjan's strongly connected
/// components), each sorted.
fn strongly_connected(edges: &BTreeMap<(String, String), Vec<Found>>) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        next.entry(from).or_default().push(to);
        next.entry(to).or_default();
    }
    let mut tarjan = Tarjan {
        next: &next,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        groups: Vec::new(),
    };
    for file in next.keys() {
        if !tarjan.index.contains_key(file) {
            tarjan.visit(file);
        }
    }
    let mut groups: Vec<Vec<String>> = tarjan
        .groups
        .into_iter()
        .filter(|group| group.len() > 1)
        .map(|group| {
            let mut group: Vec<String> = group.into_iter().map(str::to_owned).collect();
            group.sort();
            group
        })
        .collect();
    groups.sort();
    groups
}

/// For each import inside `group`, the shortest circle through it (each circle once, starting
/// from its first file by name), shortest first.
fn shortest_circles(edges: &BTreeMap<(String, String), Vec<Found>>, group: &[String]) -> Vec<Vec<String>> {
    let inside: Vec<(&String, &String)> = edges
        .keys()
        .filter(|(from, to)| group.contains(from) && group.contains(to))
        .map(|(from, to)| (from, to))
        .collect();
    let mut circles = BTreeSet::new();
    for &(from, to) in &inside {
        // The shortest way back from `to` to `from`.
        let mut came_from: BTreeMap<&String, &String> = BTreeMap::new();
        let mut seen = BTreeSet::from([to]);
        let mut queue = VecDeque::from([to]);
        while let Some(file) = queue.pop_front() {
            if file == from {
                break;
            }
            for &(a, b) in &inside {
                if a == file && seen.insert(b) {
                    came_from.insert(b, a);
                    queue.push_back(b);
                }
            }
        }
        let mut round = vec![from.clone()];
        let mut at = from;
        while at != to {
            at = came_from[at];
            round.push(at.clone());
        }
        // `round` runs from `from` back along the way to `to`: turn it, then start at the first file.
        round[1..].reverse();
        let first = (0..round.len()).min_by_key(|&k| &round[k]).expect("a circle has files");
        round.rotate_left(first);
        round.push(round[0].clone());
        circles.insert(round);
    }
    let mut circles: Vec<Vec<String>> = circles.into_iter().collect();
    circles.sort_by_key(Vec::len);
    circles
}

struct Tarjan<'a> {
    next: &'a BTreeMap<&'a str, Vec<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    groups: Vec<Vec<&'a str>>,
}

impl<'a> Tarjan<'a> {
    fn visit(&mut self, file: &'a str) {
        let index = self.index.len();
        self.index.insert(file, index);
        self.low.insert(file, index);
        self.stack.push(file);
        self.on_stack.insert(file);
        let next = self.next;
        for &to in &next[file] {
            if !self.index.contains_key(to) {
                self.visit(to);
                let low = self.low[file].min(self.low[to]);
                self.low.insert(file, low);
            } else if self.on_stack.contains(to) {
                let low = self.low[file].min(self.index[to]);
                self.low.insert(file, low);
            }
        }
        if self.low[file] == self.index[file] {
            let mut group = Vec::new();
            while let Some(member) = self.stack.pop() {
                self.on_stack.remove(member);
                group.push(member);
                if member == file {
                    break;
                }
            }
            self.groups.push(group);
        }
    }
}

// ------------------------------------------------------------------------------------------------
// Reading one file: tokens without comments and literals, then `use` trees and paths
// ------------------------------------------------------------------------------------------------

/// A token of Rust source. Comments, strings and characters are gone; numbers and lifetimes may
/// leave harmless `Word`s behind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Word(String),
    /// `::`
    PathSep,
    Punct(char),
}

fn lex(source: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1, &mut line);
        } else if c == '\'' {
            // A character ('x', '\n', '\u{1F600}') or a lifetime ('a, 'static), which goes on as a word.
            if at(i + 1) == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                line += usize::from(at(i + 1) == '\n');
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", '"' | '#') if at(i) == '"' || raw_string_opens(&chars, i) => {
                    i = skip_raw_string(&chars, i, &mut line);
                }
                ("r", '#') => {
                    // A raw identifier: r#type.
                    let start = i + 1;
                    i = start;
                    while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                        i += 1;
                    }
                    tokens.push((Token::Word(chars[start..i].iter().collect()), line));
                }
                ("b" | "c", '"') => i = skip_string(&chars, i + 1, &mut line),
                ("b", '\'') => {
                    i += if at(i + 1) == '\\' { 3 } else { 2 };
                    while i < chars.len() && chars[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                }
                _ => tokens.push((Token::Word(word), line)),
            }
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push((Token::PathSep, line));
            i += 2;
        } else {
            tokens.push((Token::Punct(c), line));
            i += 1;
        }
    }
    tokens
}

/// Past the closing quote of a string whose body starts at `i`.
fn skip_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\\' {
            i += 1;
        }
        if chars.get(i) == Some(&'\n') {
            *line += 1;
        }
        i += 1;
    }
    i + 1
}

/// Whether `#`s at `i` are followed by a quote (`r#"`), not by a word (`r#type`).
fn raw_string_opens(chars: &[char], mut i: usize) -> bool {
    while chars.get(i) == Some(&'#') {
        i += 1;
    }
    chars.get(i) == Some(&'"')
}

/// Past the end of a raw string whose `#`s (or quote) start at `i`.
fn skip_raw_string(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += usize::from(chars[i] == '\n');
        i += 1;
    }
    i
}

/// What a file's paths are relative to.
#[derive(Debug)]
struct Unit {
    /// The file's module: `["bus", "redis"]` for `bus/redis.rs`, `["bus"]` for `bus/mod.rs`.
    module: Vec<String>,
    /// `main.rs`: the root of the binary, whose `crate::` is not the library.
    binary_root: bool,
    /// The library's name as the binary uses it: `ridecast_origin`.
    lib_name: String,
}

/// A module path of the library that a file refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reference {
    /// Below the crate root: `["fanout", "subscriptions", "Inbound"]`.
    target: Vec<String>,
    line: usize,
    in_test: bool,
}

impl Reference {
    fn display(&self) -> String {
        crate_path(&self.target)
    }
}

/// A module of one file: the file's own, or one declared inside it (`mod tests { ... }`).
#[derive(Debug, Default)]
struct Scope {
    module: Vec<String>,
    parent: Option<usize>,
    in_test: bool,
    /// Modules declared in it (`mod store;`), which its paths may start with.
    children: BTreeSet<String>,
    /// Names its `use` items bind, and the paths they stand for.
    aliases: BTreeMap<String, Vec<String>>,
}

/// One leaf of a `use` tree: `crate::fanout::subscriptions::{self, Command as C}` has two.
#[derive(Debug)]
struct Leaf {
    path: Vec<String>,
    /// The name it binds in the scope (`None` for a glob or `as _`).
    binds: Option<String>,
    line: usize,
}

/// What one file says about the library's modules.
#[derive(Debug)]
struct Reading {
    /// Every module path it refers to, outside comments and literals.
    references: Vec<Reference>,
    /// The names its own `use` items bind at its top (`lib.rs`: `Config` is `app::config::Config`).
    exports: BTreeMap<String, Vec<String>>,
}

fn read_source(source: &str, unit: &Unit) -> Reading {
    let tokens = lex(source);
    let word = |i: usize| match tokens.get(i) {
        Some((Token::Word(w), _)) => Some(w.as_str()),
        _ => None,
    };
    let is = |i: usize, token: &Token| tokens.get(i).map(|(t, _)| t) == Some(token);

    // The modules inside the file, and the one each token is in.
    let mut scopes = vec![Scope { module: unit.module.clone(), ..Scope::default() }];
    let mut scope_of = Vec::with_capacity(tokens.len());
    let mut open: Vec<(usize, usize)> = Vec::new(); // (scope, brace depth at its opening)
    let mut depth = 0;
    let mut current = 0;
    for i in 0..tokens.len() {
        scope_of.push(current);
        match &tokens[i].0 {
            Token::Punct('{') => {
                depth += 1;
                if word(i.wrapping_sub(2)) == Some("mod") {
                    let name = word(i - 1).expect("a module name").to_owned();
                    scopes[current].children.insert(name.clone());
                    let mut module = scopes[current].module.clone();
                    module.push(name);
                    let in_test = scopes[current].in_test || cfg_test_before(&tokens, i - 2);
                    scopes.push(Scope { module, parent: Some(current), in_test, ..Scope::default() });
                    current = scopes.len() - 1;
                    open.push((current, depth));
                }
            }
            Token::Punct('}') => {
                if open.last().is_some_and(|&(_, opened)| opened == depth) {
                    open.pop();
                    current = scopes[current].parent.expect("an inner module has a parent");
                }
                depth -= 1;
            }
            Token::Punct(';') if word(i.wrapping_sub(2)) == Some("mod") => {
                let name = word(i - 1).expect("a module name").to_owned();
                scopes[current].children.insert(name);
            }
            _ => {}
        }
    }

    // `use` items: their leaves, and the names they bind.
    let mut in_use = vec![false; tokens.len()];
    let mut leaves: Vec<(usize, Leaf)> = Vec::new();
    for i in 0..tokens.len() {
        if word(i) != Some("use") || in_use[i] {
            continue;
        }
        let mut end = i + 1;
        let mut found = Vec::new();
        use_tree(&tokens, &mut end, Vec::new(), &mut found);
        while end < tokens.len() && !is(end, &Token::Punct(';')) {
            end += 1;
        }
        in_use[i..=end.min(tokens.len() - 1)].fill(true);
        leaves.extend(found.into_iter().map(|leaf| (scope_of[i], leaf)));
    }
    let mut references = Vec::new();
    // Twice: a `use` may start from a name that another one binds.
    for _ in 0..2 {
        references.clear();
        for (scope, leaf) in &leaves {
            if let Some(target) = resolve(&scopes, *scope, &leaf.path, unit) {
                if let Some(name) = &leaf.binds {
                    scopes[*scope].aliases.insert(name.clone(), target.clone());
                }
                references.push(Reference { target, line: leaf.line, in_test: scopes[*scope].in_test });
            }
        }
    }

    // Paths written in code: `crate::base::clock::now_ms()`, `store::ChatStore::new()`.
    for i in 0..tokens.len() {
        let starts_path = !in_use[i]
            && word(i).is_some()
            && is(i + 1, &Token::PathSep)
            && !(i > 0 && (is(i - 1, &Token::PathSep) || is(i - 1, &Token::Punct('.'))));
        if !starts_path {
            continue;
        }
        let mut path = vec![word(i).expect("a word").to_owned()];
        let mut j = i + 1;
        while is(j, &Token::PathSep) {
            match word(j + 1) {
                Some(segment) => path.push(segment.to_owned()),
                None => break,
            }
            j += 2;
        }
        if let Some(target) = resolve(&scopes, scope_of[i], &path, unit) {
            references.push(Reference { target, line: tokens[i].1, in_test: scopes[scope_of[i]].in_test });
        }
    }
    let exports = std::mem::take(&mut scopes[0].aliases);
    Reading { references, exports }
}

/// Whether the attributes before the `mod` at `i` (past any `pub(...)`) include `#[cfg(test)]`-like ones.
fn cfg_test_before(tokens: &[(Token, usize)], mut i: usize) -> bool {
    let word = |i: usize, w: &str| matches!(tokens.get(i), Some((Token::Word(x), _)) if x == w);
    let punct = |i: usize, c: char| tokens.get(i).map(|(t, _)| t) == Some(&Token::Punct(c));
    // Past the visibility.
    while i > 0
        && (word(i - 1, "pub")
            || punct(i - 1, ')')
            || punct(i - 1, '(')
            || word(i - 1, "crate")
            || word(i - 1, "super")
            || word(i - 1, "in"))
    {
        i -= 1;
    }
    // Attribute by attribute, backwards: `# [ ... ]`.
    while i > 0 && punct(i - 1, ']') {
        let close = i - 1;
        let mut depth = 0;
        let mut open = close;
        loop {
            match tokens[open].0 {
                Token::Punct(']') => depth += 1,
                Token::Punct('[') => depth -= 1,
                _ => {}
            }
            if depth == 0 || open == 0 {
                break;
            }
            open -= 1;
        }
        if word(open + 1, "cfg") && (open + 2..close).any(|k| word(k, "test")) {
            return true;
        }
        i = open.saturating_sub(1);
        if !punct(i, '#') {
            return false;
        }
    }
    false
}

/// Reads one use tree at `*pos`, below `prefix`, into `out`.
fn use_tree(tokens: &[(Token, usize)], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Leaf>) {
    while let Some((token, line)) = tokens.get(*pos) {
        *pos += 1;
        match token {
            Token::PathSep => {}
            Token::Word(name) if tokens.get(*pos).map(|(t, _)| t) == Some(&Token::PathSep) => prefix.push(name.clone()),
            Token::Word(name) => {
                let alias = match (tokens.get(*pos), tokens.get(*pos + 1)) {
                    (Some((Token::Word(as_), _)), Some((Token::Word(alias), _))) if as_ == "as" => {
                        *pos += 2;
                        Some(alias.clone())
                    }
                    _ => None,
                };
                if name != "self" {
                    prefix.push(name.clone());
                }
                let binds = alias.or_else(|| prefix.last().cloned()).filter(|name| name != "_");
                out.push(Leaf { path: prefix, binds, line: *line });
                return;
            }
            Token::Punct('*') => {
                out.push(Leaf { path: prefix, binds: None, line: *line });
                return;
            }
            Token::Punct('{') => {
                while let Some((token, _)) = tokens.get(*pos) {
                    match token {
                        Token::Punct('}') => {
                            *pos += 1;
                            return;
                        }
                        Token::Punct(',') => *pos += 1,
                        _ => use_tree(tokens, pos, prefix.clone(), out),
                    }
                }
                return;
            }
            Token::Punct(_) => return,
        }
    }
}

/// The library module path that `path`, written in `scope`, stands for; `None` for outside
/// crates, the binary's own items, and names the file defines itself.
fn resolve(scopes: &[Scope], scope: usize, path: &[String], unit: &Unit) -> Option<Vec<String>> {
    let (head, rest) = path.split_first()?;
    let here = &scopes[scope];
    let mut target = match head.as_str() {
        _ if *head == unit.lib_name => Vec::new(),
        "crate" | "self" | "super" if unit.binary_root => return None,
        "crate" => Vec::new(),
        "self" => here.module.clone(),
        "super" => {
            let mut module = here.module.clone();
            module.pop();
            let mut rest = rest;
            while rest.first().map(String::as_str) == Some("super") {
                module.pop();
                rest = &rest[1..];
            }
            module.extend(rest.iter().cloned());
            return Some(module);
        }
        _ if here.children.contains(head) => {
            let mut module = here.module.clone();
            module.push(head.clone());
            module
        }
        _ => {
            // A name a `use` bound, here or (through `use super::*`) in an outer module of the file.
            let mut at = Some(scope);
            let found = loop {
                let Some(s) = at else { break None };
                if let Some(target) = scopes[s].aliases.get(head) {
                    break Some(target.clone());
                }
                at = scopes[s].parent;
            };
            found?
        }
    };
    target.extend(rest.iter().cloned());
    Some(target)
}

// ------------------------------------------------------------------------------------------------
// The reader's own tests: a broken reader must not let the checks pass by finding nothing
// ------------------------------------------------------------------------------------------------

fn targets_in(file: &str, source: &str) -> Vec<String> {
    let unit = Unit { module: module_of(file), binary_root: file == "main.rs", lib_name: "ridecast_origin".to_owned() };
    read_source(source, &unit).references.iter().map(Reference::display).collect()
}

#[test]
fn reader_follows_nested_brace_trees_and_pub_use() {
    let source = "use crate::{\n    api::{error::ApiError, state::AppState},\n    base::clock,\n};\npub use crate::bus::Topic;\n";
    assert_eq!(
        targets_in("api/ops.rs", source),
        ["crate::api::error::ApiError", "crate::api::state::AppState", "crate::base::clock", "crate::bus::Topic"],
    );
}

#[test]
fn reader_follows_self_and_as_aliases_into_later_paths() {
    let source = "use crate::fanout::subscriptions::{self, Command as Cmd};\nuse crate::bus as b;\n\
                  fn f() { subscriptions::start(); Cmd::Reconcile; b::redis::connect(); }";
    assert_eq!(
        targets_in("fanout/hubs.rs", source),
        [
            "crate::fanout::subscriptions",
            "crate::fanout::subscriptions::Command",
            "crate::bus",
            "crate::fanout::subscriptions::start",
            "crate::fanout::subscriptions::Command::Reconcile",
            "crate::bus::redis::connect",
        ],
    );
}

#[test]
fn reader_finds_paths_in_code_but_none_in_comments_or_literals() {
    let source = r####"
//! See [`Inbound`](crate::fanout::subscriptions::Inbound).
/// Uses [crate::app::config].
// use crate::app::config;
/* crate::app::a /* nested: crate::app::b */ crate::app::c */
fn f<'a>(x: &'a str) -> u64 {
    let s = "crate::app::d \" crate::app::e";
    let r = r#"crate::app::f " crate::app::g"#;
    let b = br"crate::app::h";
    let q = '"';
    let e = '\'';
    let r#type = 1;
    x.parse::<u64>();
    crate::base::clock::now_ms() + s.len() as u64 + crate::base::random::hex::<8>()
}
"####;
    assert_eq!(targets_in("bus/redis.rs", source), ["crate::base::clock::now_ms", "crate::base::random::hex"]);
}

#[test]
fn reader_resolves_super_from_a_mod_rs_and_from_a_leaf_file() {
    let source = "use super::Topic;\nfn f() { super::connection::keep(); }\n";
    assert_eq!(targets_in("bus/embedded.rs", source), ["crate::bus::Topic", "crate::bus::connection::keep"]);
    assert_eq!(targets_in("bus/mod.rs", source), ["crate::Topic", "crate::connection::keep"]);
}

#[test]
fn reader_resolves_test_modules_and_child_modules() {
    let source = "mod store;\nuse store::ChatStore;\nfn f() { store::open(); }\n\
                  #[cfg(test)]\nmod tests {\n    use super::*;\n    fn g() { super::super::redis_url::parse(); crate::fanout::hubs::Hubs::new(); }\n}\n";
    let unit = Unit { module: module_of("bus/mod.rs"), binary_root: false, lib_name: "ridecast_origin".to_owned() };
    let found: Vec<(String, bool)> = read_source(source, &unit)
        .references
        .iter()
        .map(|reference| (reference.display(), reference.in_test))
        .collect();
    let expected = [
        ("crate::bus::store::ChatStore", false),
        ("crate::bus", true),
        ("crate::bus::store::open", false),
        ("crate::redis_url::parse", true),
        ("crate::fanout::hubs::Hubs::new", true),
    ];
    assert_eq!(found, expected.map(|(path, in_test)| (path.to_owned(), in_test)));
    let leaf = targets_in("bus/pubsub.rs", "#[cfg(test)]\nmod tests { fn g() { super::super::redis_url::parse(); } }");
    assert_eq!(leaf, ["crate::bus::redis_url::parse"]);
}

#[test]
fn binary_root_reaches_the_library_by_its_name() {
    let source = "use ridecast_origin::{Extension, app::{config::Cli, launch}};\nfn main() { crate::helper(); }";
    assert_eq!(targets_in("main.rs", source), ["crate::Extension", "crate::app::config::Cli", "crate::app::launch"]);
}

#[test]
fn a_path_leads_to_the_deepest_module_file() {
    let modules: BTreeMap<Vec<String>, String> = ["lib.rs", "bus/mod.rs", "bus/redis.rs", "app/config.rs"]
        .into_iter()
        .map(|file| (module_of(file), file.to_owned()))
        .collect();
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(file_of(&modules, &path("bus::Topic")), "bus/mod.rs");
    assert_eq!(file_of(&modules, &path("bus::redis::RedisBackend::new")), "bus/redis.rs");
    assert_eq!(file_of(&modules, &path("app::config::env::PORT")), "app/config.rs");
    assert_eq!(file_of(&modules, &path("Config")), "lib.rs");
}

#[test]
fn circles_are_found_and_a_chain_is_none() {
    let edges: BTreeMap<(String, String), Vec<Found>> =
        [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("d", "e"), ("e", "d"), ("f", "a")]
            .into_iter()
            .map(|(from, to)| ((from.to_owned(), to.to_owned()), Vec::new()))
            .collect();
    assert_eq!(strongly_connected(&edges), [vec!["a", "b", "c"], vec!["d", "e"]]);
    let abc = ["a", "b", "c"].map(str::to_owned);
    assert_eq!(shortest_circles(&edges, &abc), [vec!["a", "b", "c", "a"]]);
}

#[test]
fn a_re_exported_name_leads_to_where_it_comes_from() {
    let files = ["lib.rs", "app/mod.rs", "app/config.rs"].map(str::to_owned);
    let modules: BTreeMap<Vec<String>, String> = files.iter().map(|file| (module_of(file), file.clone())).collect();
    let sources = ["pub mod app;\npub use app::config::Config;\n", "pub mod config;\n", "pub struct Config;\n"];
    let readings: BTreeMap<&String, Reading> = files
        .iter()
        .zip(sources)
        .map(|(file, source)| {
            let unit = Unit { module: module_of(file), binary_root: false, lib_name: "ridecast_origin".to_owned() };
            (file, read_source(source, &unit))
        })
        .collect();
    let path = |p: &str| p.split("::").map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(re_export_of(&modules, &readings, &path("Config::new")), Some(path("app::config::Config::new")));
    assert_eq!(re_export_of(&modules, &readings, &path("app::config::Config")), None);
}
