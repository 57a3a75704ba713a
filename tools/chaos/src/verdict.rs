//! How a run ended: the reasons found against it ([`Findings`]: a failure is a bug, an
//! inconclusive finding means the run says nothing), and the [`Verdict`] they add up to.

/// How one run ended, worst last.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    Pass,
    Inconclusive,
    Fail,
}

/// Reasons a run failed (a bug) and reasons it says nothing (inconclusive), in the order
/// they were found.
#[derive(Default)]
pub(crate) struct Findings {
    pub failures: Vec<String>,
    pub inconclusive: Vec<String>,
}

impl Findings {
    pub fn fail(&mut self, why: impl Into<String>) {
        self.failures.push(why.into());
    }

    pub fn inconclusive(&mut self, why: impl Into<String>) {
        self.inconclusive.push(why.into());
    }

    /// Appends `other`'s findings after these.
    pub fn append(&mut self, mut other: Findings) {
        self.failures.append(&mut other.failures);
        self.inconclusive.append(&mut other.inconclusive);
    }

    /// Any failure fails the run; else anything inconclusive makes it inconclusive.
    pub fn verdict(&self) -> Verdict {
        if !self.failures.is_empty() {
            Verdict::Fail
        } else if !self.inconclusive.is_empty() {
            Verdict::Inconclusive
        } else {
            Verdict::Pass
        }
    }

    pub fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.inconclusive.is_empty()
    }
}
