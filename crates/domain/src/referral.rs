//! FHIR `Task.status`: the one list of its codes, which of them leave work
//! to do (open) and which end it (closed), for every Task Passerelle reads
//! (referrals, appeals, tasks for the patient); and the referral Task state
//! machine of the Gravity SDOH Clinical Care IG STU 2.3.0 (Task for referral
//! management), in one table.
//!
//! `draft → requested`; `requested → accepted | rejected | cancelled`;
//! `accepted → in-progress | on-hold | completed | failed | cancelled`;
//! `in-progress ⇄ on-hold`, both `→ completed | failed | cancelled`; any
//! status `→ entered-in-error`. `ready` and `received` are not used. The
//! requester sets draft, requested and entered-in-error; the performer sets
//! the rest; either may cancel. `statusReason.text` is required for rejected,
//! cancelled, on-hold and failed.

/// FHIR `Task.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Draft,
    Requested,
    Received,
    Accepted,
    Rejected,
    Ready,
    Cancelled,
    InProgress,
    OnHold,
    Failed,
    Completed,
    EnteredInError,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Draft,
        Status::Requested,
        Status::Received,
        Status::Accepted,
        Status::Rejected,
        Status::Ready,
        Status::Cancelled,
        Status::InProgress,
        Status::OnHold,
        Status::Failed,
        Status::Completed,
        Status::EnteredInError,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Requested => "requested",
            Status::Received => "received",
            Status::Accepted => "accepted",
            Status::Rejected => "rejected",
            Status::Ready => "ready",
            Status::Cancelled => "cancelled",
            Status::InProgress => "in-progress",
            Status::OnHold => "on-hold",
            Status::Failed => "failed",
            Status::Completed => "completed",
            Status::EnteredInError => "entered-in-error",
        }
    }

    /// The statuses that leave work to do, in [`Status::ALL`]'s order.
    pub const OPEN: [Status; 7] = [
        Status::Draft,
        Status::Requested,
        Status::Received,
        Status::Accepted,
        Status::Ready,
        Status::InProgress,
        Status::OnHold,
    ];

    /// The statuses after which nothing is left to do: the work was done,
    /// could not be, was refused or withdrawn, or the Task was a mistake.
    pub const CLOSED: [Status; 5] = [
        Status::Completed,
        Status::Cancelled,
        Status::EnteredInError,
        Status::Failed,
        Status::Rejected,
    ];

    /// The status named by a FHIR code; `None` for an unknown code.
    pub fn parse(code: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.code() == code)
    }

    /// Work is left to do: the status is not one of [`Status::CLOSED`].
    pub fn is_open(self) -> bool {
        !Status::CLOSED.contains(&self)
    }

    /// Whether a `Task.status` code, as a server sent it, leaves work to do.
    /// A code Passerelle does not know counts as open: nothing says the work
    /// is done.
    pub fn is_open_code(code: &str) -> bool {
        Status::parse(code).is_none_or(Status::is_open)
    }
}

/// Who asks for a change: the Task's requester, or its performer (the
/// owner: the service of a referral, the patient of a Task for the patient).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    Requester,
    Performer,
}

/// Who may make a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Requester,
    Performer,
    Either,
}

use Status::*;

/// Every allowed transition, besides `→ entered-in-error` (requester, from any status).
const TRANSITIONS: &[(Status, Status, Who)] = &[
    (Draft, Requested, Who::Requester),
    (Requested, Accepted, Who::Performer),
    (Requested, Rejected, Who::Performer),
    (Requested, Cancelled, Who::Either),
    (Accepted, InProgress, Who::Performer),
    (Accepted, OnHold, Who::Performer),
    (Accepted, Completed, Who::Performer),
    (Accepted, Failed, Who::Performer),
    (Accepted, Cancelled, Who::Either),
    (InProgress, OnHold, Who::Performer),
    (OnHold, InProgress, Who::Performer),
    (InProgress, Completed, Who::Performer),
    (InProgress, Failed, Who::Performer),
    (InProgress, Cancelled, Who::Either),
    (OnHold, Completed, Who::Performer),
    (OnHold, Failed, Who::Performer),
    (OnHold, Cancelled, Who::Either),
];

/// Statuses that need `statusReason.text`.
pub const NEEDS_REASON: [Status; 4] = [Rejected, Cancelled, OnHold, Failed];

/// Why a transition is refused: the rule it breaks, in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("SDOHCC referral Tasks do not use the status {0}.")]
    UnusedStatus(&'static str),
    #[error("A referral Task cannot go from {0} to {1}.")]
    NotAllowed(&'static str, &'static str),
    #[error("Only the {1} may move a referral Task to {0}.")]
    WrongParty(&'static str, &'static str),
    #[error("Moving a referral Task to {0} needs a reason (statusReason).")]
    ReasonRequired(&'static str),
    #[error("SDOHCC Tasks for the patient do not use the status {0}.")]
    UnusedStatusForPatient(&'static str),
    #[error("A Task for the patient cannot go from {0} to {1}.")]
    NotAllowedForPatient(&'static str, &'static str),
    #[error("Only the {1} may move a Task for the patient to {0}.")]
    WrongPartyForPatient(&'static str, &'static str),
    #[error("Cancelling a Task for the patient needs a reason (statusReason).")]
    ReasonRequiredForPatient(&'static str),
}

/// Check a status change by `party`, with the reason given (if any).
pub fn check(
    from: Status,
    to: Status,
    party: Party,
    reason: Option<&str>,
) -> Result<(), TransitionError> {
    if matches!(to, Ready | Received) {
        return Err(TransitionError::UnusedStatus(to.code()));
    }
    let who = if to == EnteredInError {
        Who::Requester
    } else {
        TRANSITIONS
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
            .map(|(_, _, w)| *w)
            .ok_or(TransitionError::NotAllowed(from.code(), to.code()))?
    };
    match (who, party) {
        (Who::Requester, Party::Performer) => {
            return Err(TransitionError::WrongParty(to.code(), "requester"));
        }
        (Who::Performer, Party::Requester) => {
            return Err(TransitionError::WrongParty(to.code(), "performer"));
        }
        _ => {}
    }
    if NEEDS_REASON.contains(&to) && reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(TransitionError::ReasonRequired(to.code()));
    }
    Ok(())
}

/// The statuses `party` may move a Task in `from` to (for the buttons a page offers).
pub fn next(from: Status, party: Party) -> Vec<Status> {
    Status::ALL
        .into_iter()
        .filter(|to| check(from, *to, party, Some("reason")).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(from: Status, to: Status) -> Option<Who> {
        if to == EnteredInError {
            return Some(Who::Requester);
        }
        TRANSITIONS
            .iter()
            .find(|(f, t, _)| *f == from && *t == to)
            .map(|(_, _, w)| *w)
    }

    #[test]
    fn every_pair_of_statuses_is_allowed_or_refused_as_the_ig_says() {
        let mut allowed_count = 0;
        for from in Status::ALL {
            for to in Status::ALL {
                for party in [Party::Requester, Party::Performer] {
                    let result = check(from, to, party, Some("the client moved away"));
                    let expected = match allowed(from, to) {
                        _ if matches!(to, Ready | Received) => false,
                        None => false,
                        Some(Who::Either) => true,
                        Some(Who::Requester) => party == Party::Requester,
                        Some(Who::Performer) => party == Party::Performer,
                    };
                    assert_eq!(
                        result.is_ok(),
                        expected,
                        "{} -> {} by {party:?}: {result:?}",
                        from.code(),
                        to.code()
                    );
                    allowed_count += usize::from(expected);
                }
            }
        }
        // 13 one-party transitions, 4 cancellations either party may make
        // (counted for both), and entered-in-error from any of 12 statuses.
        assert_eq!(allowed_count, 13 + 4 * 2 + 12);
    }

    #[test]
    fn refusals_name_the_rule() {
        assert_eq!(
            check(Requested, InProgress, Party::Performer, None)
                .unwrap_err()
                .to_string(),
            "A referral Task cannot go from requested to in-progress."
        );
        assert_eq!(
            check(Requested, Accepted, Party::Requester, None)
                .unwrap_err()
                .to_string(),
            "Only the performer may move a referral Task to accepted."
        );
        assert_eq!(
            check(Requested, Ready, Party::Performer, None)
                .unwrap_err()
                .to_string(),
            "SDOHCC referral Tasks do not use the status ready."
        );
        assert_eq!(
            check(Accepted, Received, Party::Performer, None),
            Err(TransitionError::UnusedStatus("received"))
        );
        assert_eq!(
            check(InProgress, OnHold, Party::Performer, Some("  "))
                .unwrap_err()
                .to_string(),
            "Moving a referral Task to on-hold needs a reason (statusReason)."
        );
    }

    #[test]
    fn a_reason_is_needed_exactly_for_rejected_cancelled_on_hold_and_failed() {
        assert!(check(Requested, Rejected, Party::Performer, None).is_err());
        assert!(check(Requested, Cancelled, Party::Requester, None).is_err());
        assert!(check(Accepted, Failed, Party::Performer, None).is_err());
        assert!(check(Accepted, InProgress, Party::Performer, None).is_ok());
        assert!(check(InProgress, Completed, Party::Performer, None).is_ok());
        assert!(
            check(Requested, Cancelled, Party::Performer, Some("no capacity")).is_ok(),
            "either party may cancel"
        );
    }

    #[test]
    fn every_status_is_open_or_closed_and_never_both() {
        for s in Status::ALL {
            assert_ne!(
                Status::OPEN.contains(&s),
                Status::CLOSED.contains(&s),
                "{}",
                s.code()
            );
            assert_eq!(s.is_open(), Status::OPEN.contains(&s), "{}", s.code());
        }
        assert!(Status::is_open_code("on-hold"));
        assert!(!Status::is_open_code("entered-in-error"));
        assert!(Status::is_open_code("done"), "an unknown code is open");
    }

    #[test]
    fn the_buttons_offered_follow_the_table() {
        assert_eq!(
            next(Requested, Party::Performer),
            vec![Accepted, Rejected, Cancelled]
        );
        assert_eq!(
            next(Requested, Party::Requester),
            vec![Cancelled, EnteredInError]
        );
        assert_eq!(
            next(OnHold, Party::Performer),
            vec![Cancelled, InProgress, Failed, Completed]
        );
        assert_eq!(Status::parse("in-progress"), Some(InProgress));
        assert_eq!(Status::parse("done"), None);
    }
}
