//! Letters of medical necessity and appeal letters, drafted from chart facts.
//!
//! A letter is a plain-text template (`profiles/letters/*.txt.j2`, rendered
//! with MiniJinja, auto-escaping off) filled from [`LetterFacts`], the values
//! the `passerelle::fhir` layer read from the chart. A practice can edit its own
//! copies of the templates ([`LetterTemplates::load`]); how is explained in
//! `profiles/letters/README.md`.
//!
//! **A letter never invents.** Everything a good letter needs and the chart
//! does not give is a [`Gap`]: listed in [`Draft::missing`] (in English, for
//! the clinician in the app) and left in the text as a visible bracketed
//! placeholder in the letter's language, such as
//! `[member id not found in the chart]`. The gaps are computed here, not in
//! the templates, so an edited template cannot lose them and they are tested.
//! The payer's denial text is quoted verbatim, never paraphrased: a letter
//! that restates the denial in other words could misstate what is appealed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, UndefinedBehavior, context};
use time::{Date, Month};

use super::appeal::AppealKind;

/// The templates shipped with Passerelle, by file name, as in `profiles/letters/`.
const SHIPPED: [(&str, &str); 4] = [
    (
        "lmn.en.txt.j2",
        include_str!("../../../profiles/letters/lmn.en.txt.j2"),
    ),
    (
        "lmn.fr.txt.j2",
        include_str!("../../../profiles/letters/lmn.fr.txt.j2"),
    ),
    (
        "appeal.en.txt.j2",
        include_str!("../../../profiles/letters/appeal.en.txt.j2"),
    ),
    (
        "appeal.fr.txt.j2",
        include_str!("../../../profiles/letters/appeal.fr.txt.j2"),
    ),
];

/// The languages a letter is written in; any other language falls back to the first.
pub const LANGUAGES: [&str; 2] = ["en", "fr"];

/// Which letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LetterKind {
    /// Letter of medical necessity (prior authorization, exception request).
    MedicalNecessity,
    /// Appeal of a denied claim or prior authorization.
    Appeal,
}

impl LetterKind {
    pub const ALL: [LetterKind; 2] = [LetterKind::MedicalNecessity, LetterKind::Appeal];

    /// The code used in URLs and in template file names.
    pub fn code(&self) -> &'static str {
        match self {
            LetterKind::MedicalNecessity => "lmn",
            LetterKind::Appeal => "appeal",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        LetterKind::ALL.into_iter().find(|k| k.code() == code)
    }

    /// The letter's title in `lang` (English unless `lang` is French).
    pub fn title(&self, lang: &str) -> &'static str {
        match (self, letter_lang(lang)) {
            (LetterKind::MedicalNecessity, "fr") => "Lettre de nécessité médicale",
            (LetterKind::MedicalNecessity, _) => "Letter of medical necessity",
            (LetterKind::Appeal, "fr") => "Lettre de recours",
            (LetterKind::Appeal, _) => "Appeal letter",
        }
    }

    /// The template file for this kind in `lang`, e.g. `appeal.fr.txt.j2`.
    pub fn template_name(&self, lang: &str) -> &'static str {
        match (self, letter_lang(lang)) {
            (LetterKind::MedicalNecessity, "fr") => "lmn.fr.txt.j2",
            (LetterKind::MedicalNecessity, _) => "lmn.en.txt.j2",
            (LetterKind::Appeal, "fr") => "appeal.fr.txt.j2",
            (LetterKind::Appeal, _) => "appeal.en.txt.j2",
        }
    }
}

/// A diagnosis from the chart (a Condition's code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    /// The code system's usual name, e.g. "ICD-10-CM".
    pub system: String,
    pub code: String,
    pub display: String,
}

/// A medication from the chart (MedicationStatement or MedicationRequest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Treatment {
    pub medication: String,
    /// The FHIR status code: active, stopped, completed, on-hold, ...
    pub status: String,
    pub started: Option<Date>,
    pub reason_stopped: Option<String>,
}

impl Treatment {
    /// Stopped or completed: a treatment the patient has tried, which is what
    /// a step-therapy exception rests on.
    pub fn was_tried(&self) -> bool {
        matches!(
            self.status.trim().to_ascii_lowercase().as_str(),
            "stopped" | "completed"
        )
    }
}

/// The payer's denial, as read from a ClaimResponse or entered by hand.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DenialFacts {
    /// The claim or prior-authorization number.
    pub reference: Option<String>,
    pub notice_date: Option<Date>,
    /// (code, words), e.g. ("CARC 197", "Precertification/authorization absent").
    pub reasons: Vec<(String, String)>,
    /// The payer's words, verbatim.
    pub text: Option<String>,
}

/// Everything a letter may say, as read from the chart and the visit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LetterFacts {
    /// "en" or "fr" (a regional tag such as "fr-CA" counts as French; any
    /// other language falls back to English).
    pub lang: String,
    pub today: Date,
    pub patient_name: String,
    pub birth_date: Option<Date>,
    pub member_id: Option<String>,
    pub payer: Option<String>,
    pub plan: Option<String>,
    pub group: Option<String>,
    pub diagnoses: Vec<Diagnosis>,
    pub treatments: Vec<Treatment>,
    /// The drug or service asked for (or denied).
    pub requested: Option<String>,
    pub denial: Option<DenialFacts>,
    /// The code of an [`AppealKind`] (`Task.code` of an appeal Task, see
    /// `profiles/appeal-task.md`).
    pub appeal_kind: Option<String>,
    pub expedited: bool,
    pub deadline: Option<Date>,
    pub clinician: Option<String>,
    pub practice: Option<String>,
}

impl LetterFacts {
    /// Facts with nothing but the language, the date and the patient's name.
    pub fn new(lang: &str, today: Date, patient_name: &str) -> Self {
        LetterFacts {
            lang: lang.to_string(),
            today,
            patient_name: patient_name.to_string(),
            birth_date: None,
            member_id: None,
            payer: None,
            plan: None,
            group: None,
            diagnoses: Vec::new(),
            treatments: Vec::new(),
            requested: None,
            denial: None,
            appeal_kind: None,
            expedited: false,
            deadline: None,
            clinician: None,
            practice: None,
        }
    }

    /// Expedited review is asked for: the flag, or an `expedited-appeal`.
    pub fn is_expedited(&self) -> bool {
        self.expedited || self.appeal_kind.as_deref() == Some(AppealKind::ExpeditedAppeal.code())
    }
}

/// A drafted letter, for the clinician to review and edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    pub title: String,
    pub text: String,
    /// What the letter needs and the chart does not give, in English (shown
    /// to the clinician); each is also a bracketed placeholder in `text`.
    pub missing: Vec<String>,
}

/// Something a good letter needs and the chart does not give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gap {
    BirthDate,
    MemberId,
    Payer,
    Diagnosis,
    Requested,
    DenialText,
    StepTherapyHistory,
    Clinician,
}

impl Gap {
    pub const ALL: [Gap; 8] = [
        Gap::BirthDate,
        Gap::MemberId,
        Gap::Payer,
        Gap::Diagnosis,
        Gap::Requested,
        Gap::DenialText,
        Gap::StepTherapyHistory,
        Gap::Clinician,
    ];

    /// What is missing, in English, for the clinician.
    pub fn message(&self) -> &'static str {
        match self {
            Gap::BirthDate => "date of birth not found in the chart",
            Gap::MemberId => "member id not found in the chart",
            Gap::Payer => "payer not found in the chart",
            Gap::Diagnosis => "no diagnosis in the chart",
            Gap::Requested => "drug or service requested not given",
            Gap::DenialText => {
                "denial text not given: the payer's words are quoted verbatim, enter them from the notice"
            }
            Gap::StepTherapyHistory => {
                "no step-therapy history: no stopped or completed medication in the chart"
            }
            Gap::Clinician => "clinician's name not given (signature)",
        }
    }

    /// The bracketed placeholder left in the letter, in the letter's language.
    pub fn placeholder(&self, lang: &str) -> &'static str {
        let fr = letter_lang(lang) == "fr";
        match self {
            Gap::BirthDate if fr => "[date de naissance introuvable dans le dossier]",
            Gap::BirthDate => "[date of birth not found in the chart]",
            Gap::MemberId if fr => "[numéro d’adhérent introuvable dans le dossier]",
            Gap::MemberId => "[member id not found in the chart]",
            Gap::Payer if fr => "[assureur introuvable dans le dossier]",
            Gap::Payer => "[payer not found in the chart]",
            Gap::Diagnosis if fr => "[aucun diagnostic dans le dossier]",
            Gap::Diagnosis => "[no diagnosis in the chart]",
            Gap::Requested if fr => "[traitement ou soin demandé non précisé]",
            Gap::Requested => "[drug or service requested not given]",
            Gap::DenialText if fr => {
                "[texte de l’avis de refus non fourni : le recopier ici mot pour mot]"
            }
            Gap::DenialText => "[denial text not given: copy the payer's words here verbatim]",
            Gap::StepTherapyHistory if fr => {
                "[aucun antécédent de traitement par étapes : aucun médicament arrêté ou terminé dans le dossier]"
            }
            Gap::StepTherapyHistory => {
                "[no step-therapy history: no stopped or completed medication in the chart]"
            }
            Gap::Clinician if fr => "[nom du médecin]",
            Gap::Clinician => "[clinician's name]",
        }
    }

    /// What a letter of `kind` lacks, from `facts`, in a fixed order.
    pub fn find(kind: LetterKind, facts: &LetterFacts) -> Vec<Gap> {
        let mut gaps = Vec::new();
        if facts.birth_date.is_none() {
            gaps.push(Gap::BirthDate);
        }
        if given(&facts.member_id).is_none() {
            gaps.push(Gap::MemberId);
        }
        if given(&facts.payer).is_none() {
            gaps.push(Gap::Payer);
        }
        if !facts.diagnoses.iter().any(|d| !d.code.trim().is_empty()) {
            gaps.push(Gap::Diagnosis);
        }
        if given(&facts.requested).is_none() {
            gaps.push(Gap::Requested);
        }
        if kind == LetterKind::Appeal
            && facts
                .denial
                .as_ref()
                .and_then(|d| d.text.as_deref())
                .is_none_or(|t| t.trim().is_empty())
        {
            gaps.push(Gap::DenialText);
        }
        if facts.appeal_kind.as_deref() == Some(AppealKind::StepTherapyException.code())
            && !listed_treatments(facts).any(|t| t.was_tried())
        {
            gaps.push(Gap::StepTherapyHistory);
        }
        if given(&facts.clinician).is_none() {
            gaps.push(Gap::Clinician);
        }
        gaps
    }
}

/// The placeholders still present in a (possibly edited) letter, in either
/// language: the app warns before a letter with a gap is printed or stored.
pub fn placeholders_in(text: &str) -> Vec<Gap> {
    Gap::ALL
        .into_iter()
        .filter(|g| LANGUAGES.iter().any(|l| text.contains(g.placeholder(l))))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum LetterError {
    #[error("cannot read the letter templates in {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{}: not a letter template name Passerelle knows (expected one of: {})",
        path.display(),
        SHIPPED.map(|(name, _)| name).join(", ")
    )]
    UnknownTemplate { path: PathBuf },
    #[error("letter template {file}{}: {detail}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Template {
        /// The file: a path for a practice's copy, `profiles/letters/NAME (shipped)` otherwise.
        file: String,
        line: Option<usize>,
        detail: String,
    },
    #[error("unknown appeal kind {0:?} (expected one of: {kinds})", kinds = AppealKind::ALL.map(AppealKind::code).join(", "))]
    UnknownAppealKind(String),
}

/// The letter templates in use: the shipped ones, or a practice's edited copies.
#[derive(Debug, Clone)]
pub struct LetterTemplates {
    env: Environment<'static>,
    /// Template name → where it came from, for error messages.
    origins: BTreeMap<&'static str, String>,
}

impl LetterTemplates {
    /// The templates in `profiles/letters/`, embedded at build time.
    pub fn shipped() -> Self {
        Self::from_sources(SHIPPED.map(|(name, source)| {
            (
                name,
                format!("profiles/letters/{name} (shipped)"),
                source.to_string(),
            )
        }))
        .expect("the shipped letter templates are valid (tested)")
    }

    /// A practice's edited copies: each `*.j2` file in `dir` named like a
    /// shipped template replaces it; the others stay shipped. A file that
    /// does not parse, or that fails on sample facts (an unknown variable,
    /// say), is an error naming the file and the line; a `*.j2` file with
    /// another name is an error too, so a misspelt name is not ignored.
    pub fn load(dir: &Path) -> Result<Self, LetterError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LetterError::Read { path, source }
        };
        let mut sources: Vec<(&'static str, String, String)> = SHIPPED
            .iter()
            .map(|(name, source)| {
                (
                    *name,
                    format!("profiles/letters/{name} (shipped)"),
                    source.to_string(),
                )
            })
            .collect();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err(dir))?;
        entries.sort();
        for path in entries {
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !file_name.ends_with(".j2") || !path.is_file() {
                continue;
            }
            let Some(slot) = sources.iter_mut().find(|(name, _, _)| *name == file_name) else {
                return Err(LetterError::UnknownTemplate { path });
            };
            slot.2 = std::fs::read_to_string(&path).map_err(read_err(&path))?;
            slot.1 = path.display().to_string();
        }
        Self::from_sources(sources)
    }

    fn from_sources(
        sources: impl IntoIterator<Item = (&'static str, String, String)>,
    ) -> Result<Self, LetterError> {
        let mut env = Environment::new();
        // Plain text: nothing is escaped, the payer's words stay as written.
        env.set_auto_escape_callback(|_| AutoEscape::None);
        // Printing an unknown variable is an error (a misspelt name must not
        // vanish from a letter); testing one with `if` is allowed.
        env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        let mut origins = BTreeMap::new();
        for (name, origin, source) in sources {
            env.add_template_owned(name, source)
                .map_err(|e| template_error(&origin, &e))?;
            origins.insert(name, origin);
        }
        let templates = LetterTemplates { env, origins };
        templates.check()?;
        Ok(templates)
    }

    /// Render every template with complete and with empty sample facts, so a
    /// template that fails at render time fails when it is loaded, not when
    /// a clinician drafts a letter.
    fn check(&self) -> Result<(), LetterError> {
        let today = Date::from_calendar_date(2026, Month::November, 22).expect("valid date");
        for kind in LetterKind::ALL {
            for lang in LANGUAGES {
                let mut full = LetterFacts {
                    birth_date: Some(today),
                    member_id: Some("M".into()),
                    payer: Some("P".into()),
                    plan: Some("P".into()),
                    group: Some("G".into()),
                    diagnoses: vec![Diagnosis {
                        system: "ICD-10-CM".into(),
                        code: "E11.9".into(),
                        display: "D".into(),
                    }],
                    treatments: vec![Treatment {
                        medication: "M".into(),
                        status: "stopped".into(),
                        started: Some(today),
                        reason_stopped: Some("R".into()),
                    }],
                    requested: Some("R".into()),
                    denial: Some(DenialFacts {
                        reference: Some("R".into()),
                        notice_date: Some(today),
                        reasons: vec![("C".into(), "W".into())],
                        text: Some("T".into()),
                    }),
                    appeal_kind: None,
                    expedited: true,
                    deadline: Some(today),
                    clinician: Some("C".into()),
                    practice: Some("P".into()),
                    ..LetterFacts::new(lang, today, "N")
                };
                for appeal_kind in AppealKind::ALL {
                    full.appeal_kind = Some(appeal_kind.code().to_string());
                    self.draft(kind, &full)?;
                }
                self.draft(kind, &LetterFacts::new(lang, today, "N"))?;
            }
        }
        Ok(())
    }

    /// Draft a letter of `kind` from `facts`.
    pub fn draft(&self, kind: LetterKind, facts: &LetterFacts) -> Result<Draft, LetterError> {
        if let Some(k) = facts.appeal_kind.as_deref()
            && AppealKind::parse(k).is_none()
        {
            return Err(LetterError::UnknownAppealKind(k.to_string()));
        }
        let lang = letter_lang(&facts.lang);
        let gaps = Gap::find(kind, facts);
        let name = kind.template_name(lang);
        let template = self
            .env
            .get_template(name)
            .map_err(|e| template_error(self.origins.get(name).map_or(name, |o| o.as_str()), &e))?;
        let text = template
            .render(context(kind, facts, lang, &gaps))
            .map_err(|e| template_error(self.origins.get(name).map_or(name, |o| o.as_str()), &e))?;
        Ok(Draft {
            title: kind.title(lang).to_string(),
            text: format!("{}\n", text.trim()),
            missing: gaps.iter().map(|g| g.message().to_string()).collect(),
        })
    }
}

fn template_error(file: &str, e: &minijinja::Error) -> LetterError {
    LetterError::Template {
        file: file.to_string(),
        line: e.line(),
        detail: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    }
}

/// The template context; the variables are documented in `profiles/letters/README.md`.
fn context(kind: LetterKind, facts: &LetterFacts, lang: &'static str, gaps: &[Gap]) -> Value {
    let placeholder = |gap: Gap| gaps.contains(&gap).then(|| gap.placeholder(lang));
    let or_placeholder = |value: &Option<String>, gap: Gap| -> String {
        given(value).map_or_else(|| gap.placeholder(lang).to_string(), str::to_string)
    };
    let date = |d: Option<Date>| d.map(|d| format_date(d, lang));
    let diagnoses: Vec<Value> = facts
        .diagnoses
        .iter()
        .filter(|d| !d.code.trim().is_empty())
        .map(|d| {
            context! {
                system => d.system.trim(),
                code => d.code.trim(),
                display => d.display.trim(),
            }
        })
        .collect();
    let treatments: Vec<Value> = listed_treatments(facts)
        .map(|t| {
            context! {
                medication => t.medication.trim(),
                status => status_words(&t.status, lang),
                status_code => t.status.trim(),
                started => date(t.started),
                reason_stopped => given(&t.reason_stopped),
                tried => t.was_tried(),
            }
        })
        .collect();
    let tried: Vec<String> = listed_treatments(facts)
        .filter(|t| t.was_tried())
        .map(|t| t.medication.trim().to_string())
        .collect();
    let denial = facts.denial.clone().unwrap_or_default();
    let denial_reasons: Vec<Value> = denial
        .reasons
        .iter()
        .filter(|(code, words)| !code.trim().is_empty() || !words.trim().is_empty())
        .map(|(code, words)| context! { code => code.trim(), words => words.trim() })
        .collect();
    // Verbatim: not trimmed, not reflowed; only a text of blanks counts as absent.
    let denial_text = denial.text.filter(|t| !t.trim().is_empty());
    let birth_date =
        date(facts.birth_date).unwrap_or_else(|| Gap::BirthDate.placeholder(lang).to_string());
    context! {
        kind => kind.code(),
        lang => lang,
        title => kind.title(lang),
        today => format_date(facts.today, lang),
        patient_name => facts.patient_name.trim(),
        birth_date => birth_date,
        member_id => or_placeholder(&facts.member_id, Gap::MemberId),
        payer => or_placeholder(&facts.payer, Gap::Payer),
        plan => given(&facts.plan),
        group => given(&facts.group),
        diagnoses => diagnoses,
        diagnoses_missing => placeholder(Gap::Diagnosis),
        treatments => treatments,
        tried => tried.clone(),
        tried_text => enumerate(&tried, lang),
        step_therapy_missing => placeholder(Gap::StepTherapyHistory),
        requested => or_placeholder(&facts.requested, Gap::Requested),
        denial_reference => given(&denial.reference),
        denial_date => date(denial.notice_date),
        denial_reasons => denial_reasons,
        denial_text => denial_text,
        denial_text_missing => placeholder(Gap::DenialText),
        appeal_kind => facts.appeal_kind.as_deref(),
        appeal_subject => appeal_subject(facts.appeal_kind.as_deref(), lang),
        expedited => facts.is_expedited(),
        deadline => date(facts.deadline),
        clinician => or_placeholder(&facts.clinician, Gap::Clinician),
        practice => given(&facts.practice),
    }
}

/// The treatments a letter lists: named ones, not entered in error.
fn listed_treatments(facts: &LetterFacts) -> impl Iterator<Item = &Treatment> {
    facts.treatments.iter().filter(|t| {
        !t.medication.trim().is_empty() && !t.status.trim().eq_ignore_ascii_case("entered-in-error")
    })
}

/// A value that is present and not blank, trimmed.
fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// "fr" for French (any "fr" or "fr-XX" tag), "en" otherwise.
pub fn letter_lang(lang: &str) -> &'static str {
    let primary = lang.split(['-', '_']).next().unwrap_or("");
    if primary.eq_ignore_ascii_case("fr") {
        "fr"
    } else {
        "en"
    }
}

/// "November 22, 2026" in English, "22 novembre 2026" in French (with
/// "1er" for the first of the month, as French writes it).
pub fn format_date(date: Date, lang: &str) -> String {
    let month = date.month() as usize - 1;
    if letter_lang(lang) == "fr" {
        const MOIS: [&str; 12] = [
            "janvier",
            "février",
            "mars",
            "avril",
            "mai",
            "juin",
            "juillet",
            "août",
            "septembre",
            "octobre",
            "novembre",
            "décembre",
        ];
        let day = match date.day() {
            1 => "1er".to_string(),
            d => d.to_string(),
        };
        format!("{day} {} {}", MOIS[month], date.year())
    } else {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        format!("{} {}, {}", MONTHS[month], date.day(), date.year())
    }
}

/// "a", "a and b", "a, b and c" ("et" in French).
fn enumerate(items: &[String], lang: &str) -> String {
    let and = if letter_lang(lang) == "fr" {
        "et"
    } else {
        "and"
    };
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} {and} {last}", init.join(", ")),
    }
}

/// A medication status (FHIR MedicationStatement / MedicationRequest codes) in words.
fn status_words(status: &str, lang: &str) -> String {
    let code = status.trim().to_ascii_lowercase();
    let fr = letter_lang(lang) == "fr";
    let words = match code.as_str() {
        "active" if fr => "en cours",
        "active" => "active",
        "stopped" if fr => "arrêté",
        "stopped" => "stopped",
        "completed" if fr => "terminé",
        "completed" => "completed",
        "on-hold" if fr => "suspendu",
        "on-hold" => "on hold",
        "cancelled" if fr => "annulé",
        "cancelled" => "cancelled",
        "intended" if fr => "prévu",
        "intended" => "intended",
        "not-taken" if fr => "non pris",
        "not-taken" => "not taken",
        "draft" if fr => "en projet",
        "draft" => "draft",
        "unknown" if fr => "statut inconnu",
        "unknown" => "status unknown",
        _ => return status.trim().to_string(),
    };
    words.to_string()
}

/// The subject line of an appeal letter, by appeal kind.
fn appeal_subject(kind: Option<&str>, lang: &str) -> &'static str {
    let fr = letter_lang(lang) == "fr";
    match kind.and_then(AppealKind::parse) {
        Some(AppealKind::InternalAppeal) if fr => "Demande de recours interne",
        Some(AppealKind::InternalAppeal) => "Request for internal appeal",
        Some(AppealKind::ExpeditedAppeal) if fr => "Demande de recours accéléré",
        Some(AppealKind::ExpeditedAppeal) => "Request for expedited appeal",
        Some(AppealKind::ExternalReview) if fr => "Demande de révision externe",
        Some(AppealKind::ExternalReview) => "Request for external review",
        Some(AppealKind::StepTherapyException) if fr => {
            "Demande d’exception au protocole de traitement par étapes"
        }
        Some(AppealKind::StepTherapyException) => "Request for a step-therapy exception",
        Some(AppealKind::FormularyException) if fr => {
            "Demande d’exception à la liste des médicaments couverts"
        }
        Some(AppealKind::FormularyException) => "Request for a formulary exception",
        None if fr => "Recours contre un refus de prise en charge",
        None => "Appeal of a coverage denial",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    const DENIAL: &str = "Step therapy required: the member must try & fail metformin <and> a sulfonylurea\nbefore Ozempic is covered.  Per policy RX-114.";

    fn step_therapy_facts(lang: &str) -> LetterFacts {
        LetterFacts {
            birth_date: Some(date!(1961 - 03 - 01)),
            member_id: Some("XJH4481902".into()),
            payer: Some("Acme Health".into()),
            plan: Some("Acme Gold PPO".into()),
            group: Some("GRP-7731".into()),
            diagnoses: vec![Diagnosis {
                system: "ICD-10-CM".into(),
                code: "E11.65".into(),
                display: "Type 2 diabetes mellitus with hyperglycemia".into(),
            }],
            treatments: vec![
                Treatment {
                    medication: "metformin 1000 mg".into(),
                    status: "stopped".into(),
                    started: Some(date!(2024 - 01 - 15)),
                    reason_stopped: Some("severe gastrointestinal intolerance".into()),
                },
                Treatment {
                    medication: "glipizide 5 mg".into(),
                    status: "completed".into(),
                    started: Some(date!(2024 - 06 - 01)),
                    reason_stopped: None,
                },
                Treatment {
                    medication: "lisinopril 10 mg".into(),
                    status: "active".into(),
                    started: None,
                    reason_stopped: None,
                },
            ],
            requested: Some("Ozempic (semaglutide) 0.5 mg".into()),
            denial: Some(DenialFacts {
                reference: Some("PA-2026-118842".into()),
                notice_date: Some(date!(2026 - 11 - 02)),
                reasons: vec![("CARC 197".into(), "Precertification absent".into())],
                text: Some(DENIAL.into()),
            }),
            appeal_kind: Some("step-therapy-exception".into()),
            expedited: false,
            deadline: Some(date!(2027 - 05 - 01)),
            clinician: Some("Dr Claire Moreau".into()),
            practice: Some("Clinique du Parc".into()),
            ..LetterFacts::new(lang, date!(2026 - 11 - 22), "Jeanne Lefèvre")
        }
    }

    #[test]
    fn english_step_therapy_appeal_quotes_the_chart_and_the_denial_verbatim() {
        let d = LetterTemplates::shipped()
            .draft(LetterKind::Appeal, &step_therapy_facts("en"))
            .unwrap();
        assert_eq!(d.title, "Appeal letter");
        assert!(d.missing.is_empty(), "{:?}", d.missing);
        for expected in [
            "Member ID: XJH4481902",
            "E11.65 (ICD-10-CM): Type 2 diabetes mellitus with hyperglycemia",
            "Re: Request for a step-therapy exception",
            "November 22, 2026",
            "Date of birth: March 1, 1961",
            "Acme Health",
            "Plan: Acme Gold PPO",
            "Group number: GRP-7731",
            "Claim or authorization number: PA-2026-118842",
            "Date of the denial notice: November 2, 2026",
            "- CARC 197: Precertification absent",
            "- metformin 1000 mg: stopped, started January 15, 2024; reason stopped: severe gastrointestinal intolerance.",
            "- glipizide 5 mg: completed, started June 1, 2024.",
            "- lisinopril 10 mg: active.",
            "has already tried metformin 1000 mg and glipizide 5 mg",
            "Ozempic (semaglutide) 0.5 mg",
            "The filing deadline for this appeal is May 1, 2027.",
            "Dr Claire Moreau\nClinique du Parc\n",
        ] {
            assert!(
                d.text.contains(expected),
                "{expected:?} not in:\n{}",
                d.text
            );
        }
        // Verbatim: same characters, same line break, same double space, no escaping.
        assert!(d.text.contains(&format!("“{DENIAL}”")), "{}", d.text);
        assert!(!d.text.contains("&amp;") && !d.text.contains("&lt;"));
        assert!(
            !d.text.contains('['),
            "no placeholder expected:\n{}",
            d.text
        );
    }

    #[test]
    fn french_lmn_has_french_dates_and_accents() {
        let mut facts = step_therapy_facts("fr-CA");
        facts.appeal_kind = None;
        let d = LetterTemplates::shipped()
            .draft(LetterKind::MedicalNecessity, &facts)
            .unwrap();
        assert_eq!(d.title, "Lettre de nécessité médicale");
        for expected in [
            "Le 22 novembre 2026",
            "Date de naissance\u{a0}: 1er mars 1961",
            "Numéro d’adhérent\u{a0}: XJH4481902",
            "nécessité médicale",
            "débuté le 15 janvier 2024",
            "arrêté",
            "terminé",
            "en cours",
            "Jeanne Lefèvre",
            "metformin 1000 mg et glipizide 5 mg",
            "l’expression de mes salutations distinguées",
        ] {
            assert!(
                d.text.contains(expected),
                "{expected:?} not in:\n{}",
                d.text
            );
        }
        assert!(!d.text.contains("November"));
        assert!(d.missing.is_empty(), "{:?}", d.missing);
    }

    #[test]
    fn dates_in_both_languages() {
        assert_eq!(
            format_date(date!(2026 - 11 - 22), "en"),
            "November 22, 2026"
        );
        assert_eq!(format_date(date!(2026 - 11 - 22), "fr"), "22 novembre 2026");
        assert_eq!(format_date(date!(2026 - 08 - 01), "fr"), "1er août 2026");
        assert_eq!(format_date(date!(2026 - 02 - 03), "es"), "February 3, 2026");
    }

    #[test]
    fn what_the_chart_lacks_is_listed_and_left_as_a_placeholder() {
        let mut facts = step_therapy_facts("en");
        facts.member_id = None;
        facts.treatments.retain(|t| !t.was_tried());
        let d = LetterTemplates::shipped()
            .draft(LetterKind::Appeal, &facts)
            .unwrap();
        assert_eq!(
            d.missing,
            [
                "member id not found in the chart",
                "no step-therapy history: no stopped or completed medication in the chart",
            ]
        );
        assert!(
            d.text
                .contains("Member ID: [member id not found in the chart]")
        );
        assert!(d.text.contains(
            "- [no step-therapy history: no stopped or completed medication in the chart]"
        ));
        assert!(!d.text.contains("has already tried"));
        assert_eq!(
            placeholders_in(&d.text),
            [Gap::MemberId, Gap::StepTherapyHistory]
        );

        // The same in French: placeholders in French, `missing` in English.
        facts.lang = "fr".into();
        let d = LetterTemplates::shipped()
            .draft(LetterKind::Appeal, &facts)
            .unwrap();
        assert_eq!(d.missing[0], "member id not found in the chart");
        assert!(
            d.text
                .contains("[numéro d’adhérent introuvable dans le dossier]"),
            "{}",
            d.text
        );
        assert_eq!(
            placeholders_in(&d.text),
            [Gap::MemberId, Gap::StepTherapyHistory]
        );
    }

    #[test]
    fn an_empty_chart_invents_nothing() {
        for lang in LANGUAGES {
            for kind in LetterKind::ALL {
                let facts = LetterFacts {
                    appeal_kind: Some("step-therapy-exception".into()),
                    // Blank values count as absent.
                    member_id: Some("  ".into()),
                    ..LetterFacts::new(lang, date!(2026 - 11 - 22), "Sam Doe")
                };
                let d = LetterTemplates::shipped().draft(kind, &facts).unwrap();
                let mut expected = vec![
                    Gap::BirthDate,
                    Gap::MemberId,
                    Gap::Payer,
                    Gap::Diagnosis,
                    Gap::Requested,
                    Gap::DenialText,
                    Gap::StepTherapyHistory,
                    Gap::Clinician,
                ];
                if kind == LetterKind::MedicalNecessity {
                    expected.retain(|g| *g != Gap::DenialText);
                }
                let messages: Vec<&str> = expected.iter().map(|g| g.message()).collect();
                assert_eq!(d.missing, messages, "{kind:?} {lang}");
                assert_eq!(
                    placeholders_in(&d.text),
                    expected,
                    "{kind:?} {lang}:\n{}",
                    d.text
                );
                assert!(
                    !d.text.contains("“") && !d.text.contains('«'),
                    "nothing quoted"
                );
            }
        }
    }

    #[test]
    fn expedited_paragraph_only_when_expedited() {
        let templates = LetterTemplates::shipped();
        let standard = "applying the standard timeframe could seriously jeopardize the life or health of the patient or the ability to regain maximum function";
        for kind in LetterKind::ALL {
            let mut facts = step_therapy_facts("en");
            let d = templates.draft(kind, &facts).unwrap();
            assert!(!d.text.contains(standard), "{kind:?}");
            assert!(!d.text.contains("expedited"), "{kind:?}:\n{}", d.text);
            facts.expedited = true;
            let d = templates.draft(kind, &facts).unwrap();
            assert!(d.text.contains(standard), "{kind:?}:\n{}", d.text);
            assert!(d.text.contains("45 CFR 147.136"));
            if kind == LetterKind::Appeal {
                assert!(d.text.contains("within 72 hours"));
                assert!(d.text.contains("42 CFR 422.584; 42 CFR 423.584"));
                assert!(d.text.contains("(EXPEDITED)"));
            }
            facts.lang = "fr".into();
            let d = templates.draft(kind, &facts).unwrap();
            assert!(d.text.contains("Demande d’examen accéléré"), "{kind:?}");
        }
        // An expedited appeal asks for expedited review without the flag.
        let facts = LetterFacts {
            appeal_kind: Some("expedited-appeal".into()),
            ..step_therapy_facts("en")
        };
        let d = templates.draft(LetterKind::Appeal, &facts).unwrap();
        assert!(
            d.text
                .contains("Re: Request for expedited appeal (EXPEDITED)")
        );
        assert!(d.text.contains(standard));
    }

    #[test]
    fn unknown_appeal_kind_is_an_error() {
        let facts = LetterFacts {
            appeal_kind: Some("second-opinion".into()),
            ..step_therapy_facts("en")
        };
        let err = LetterTemplates::shipped()
            .draft(LetterKind::Appeal, &facts)
            .unwrap_err();
        assert!(err.to_string().contains("second-opinion"), "{err}");
    }

    #[test]
    fn kinds_parse_and_fall_back_to_english() {
        for kind in LetterKind::ALL {
            assert_eq!(LetterKind::parse(kind.code()), Some(kind));
        }
        assert_eq!(LetterKind::parse("memo"), None);
        assert_eq!(LetterKind::Appeal.title("es"), "Appeal letter");
        assert_eq!(LetterKind::Appeal.title("fr"), "Lettre de recours");
        let d = LetterTemplates::shipped()
            .draft(LetterKind::Appeal, &step_therapy_facts("es"))
            .unwrap();
        assert!(d.text.contains("To whom it may concern"));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("passerelle-letter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn load_overrides_one_template_and_keeps_the_others() {
        let dir = temp_dir("override");
        std::fs::write(
            dir.join("lmn.en.txt.j2"),
            "Our own letter for {{ patient_name }}, member {{ member_id }}.\n",
        )
        .unwrap();
        std::fs::write(dir.join("README.md"), "notes, not a template").unwrap();
        let templates = LetterTemplates::load(&dir).unwrap();
        let facts = step_therapy_facts("en");
        let d = templates
            .draft(LetterKind::MedicalNecessity, &facts)
            .unwrap();
        assert_eq!(
            d.text,
            "Our own letter for Jeanne Lefèvre, member XJH4481902.\n"
        );
        let shipped = LetterTemplates::shipped();
        for (kind, lang) in [
            (LetterKind::Appeal, "en"),
            (LetterKind::Appeal, "fr"),
            (LetterKind::MedicalNecessity, "fr"),
        ] {
            let facts = step_therapy_facts(lang);
            assert_eq!(
                templates.draft(kind, &facts).unwrap(),
                shipped.draft(kind, &facts).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_broken_template_is_an_error_naming_the_file_and_line() {
        let dir = temp_dir("broken");
        let path = dir.join("appeal.fr.txt.j2");
        std::fs::write(&path, "Madame, Monsieur,\n\n{% if expedited %}\nurgent\n").unwrap();
        let err = LetterTemplates::load(&dir).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line"), "{err}");

        // A misspelt variable fails at load time too, not when a letter is drafted.
        std::fs::write(&path, "Bonjour\n{{ patient_nom }}\n").unwrap();
        let err = LetterTemplates::load(&dir).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("line 2"), "{err}");

        // A misspelt file name is not silently ignored.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(dir.join("apeal.fr.txt.j2"), "x").unwrap();
        let err = LetterTemplates::load(&dir).unwrap_err().to_string();
        assert!(err.contains("apeal.fr.txt.j2"), "{err}");
        assert!(err.contains("appeal.fr.txt.j2"), "{err}");

        let err = LetterTemplates::load(&dir.join("absent")).unwrap_err();
        assert!(matches!(err, LetterError::Read { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn templates_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<LetterTemplates>();
    }
}
