//! The social-risk domains Passerelle screens for, as coded by the Gravity
//! SDOH Clinical Care IG STU 2.3.0 (`SDOHCC-CodeSystemTemporaryCodes` and the
//! US Core `sdoh` category).

/// Code system of the SDOHCC domain categories.
pub const SDOHCC_TEMPORARY_CODES: &str =
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes";
/// US Core category code system (`sdoh`, `health-concern`, …).
pub const US_CORE_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category";

/// One SDOH domain.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Domain {
    FoodInsecurity,
    HousingInstability,
    Homelessness,
    InadequateHousing,
    TransportationInsecurity,
    UtilityInsecurity,
    IntimatePartnerViolence,
    FinancialInsecurity,
    MedicalCostBurden,
    LanguageAccess,
    PersonalHealthLiteracy,
    SocialConnection,
}

impl Domain {
    pub const ALL: [Domain; 12] = [
        Domain::FoodInsecurity,
        Domain::HousingInstability,
        Domain::Homelessness,
        Domain::InadequateHousing,
        Domain::TransportationInsecurity,
        Domain::UtilityInsecurity,
        Domain::IntimatePartnerViolence,
        Domain::FinancialInsecurity,
        Domain::MedicalCostBurden,
        Domain::LanguageAccess,
        Domain::PersonalHealthLiteracy,
        Domain::SocialConnection,
    ];

    /// The SDOHCC category code.
    pub fn code(self) -> &'static str {
        match self {
            Domain::FoodInsecurity => "food-insecurity",
            Domain::HousingInstability => "housing-instability",
            Domain::Homelessness => "homelessness",
            Domain::InadequateHousing => "inadequate-housing",
            Domain::TransportationInsecurity => "transportation-insecurity",
            Domain::UtilityInsecurity => "utility-insecurity",
            Domain::IntimatePartnerViolence => "intimate-partner-violence",
            Domain::FinancialInsecurity => "financial-insecurity",
            Domain::MedicalCostBurden => "medical-cost-burden",
            Domain::LanguageAccess => "language-access",
            Domain::PersonalHealthLiteracy => "personal-health-literacy",
            Domain::SocialConnection => "social-connection",
        }
    }

    /// The label a clinician reads.
    pub fn label(self) -> &'static str {
        match self {
            Domain::FoodInsecurity => "Food insecurity",
            Domain::HousingInstability => "Housing instability",
            Domain::Homelessness => "Homelessness",
            Domain::InadequateHousing => "Inadequate housing",
            Domain::TransportationInsecurity => "Transportation insecurity",
            Domain::UtilityInsecurity => "Utility insecurity",
            Domain::IntimatePartnerViolence => "Intimate partner violence",
            Domain::FinancialInsecurity => "Financial insecurity",
            Domain::MedicalCostBurden => "Medical cost burden",
            Domain::LanguageAccess => "Language access",
            Domain::PersonalHealthLiteracy => "Health literacy",
            Domain::SocialConnection => "Social connection",
        }
    }

    /// The domain named by an SDOHCC category code; `None` for any other code.
    pub fn from_code(code: &str) -> Option<Domain> {
        Domain::ALL.into_iter().find(|d| d.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_none() {
        for d in Domain::ALL {
            assert_eq!(Domain::from_code(d.code()), Some(d));
        }
        assert_eq!(Domain::from_code("sdoh"), None);
        assert_eq!(Domain::from_code("Food-Insecurity"), None);
    }
}
