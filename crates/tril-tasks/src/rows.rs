//! Problem rows in task data (a label that is no label, a conversational row where text is
//! expected): by default each is skipped, counted, and reported once per file with the
//! first few named; with the task's `strict: true` the first one is the error instead.

use crate::error::TaskError;

/// The problem rows met while reading one source (see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowProblems {
    strict: bool,
    count: usize,
    first: Vec<String>,
}

impl RowProblems {
    /// How many problem rows a report names.
    pub const NAMED: usize = 5;

    /// Problems handled as `task.args.strict` says.
    pub fn new(strict: bool) -> Self {
        RowProblems { strict, ..Default::default() }
    }

    /// A problem row: with `strict` the error itself, else counted (`Ok`: skip the row).
    pub fn skip(&mut self, problem: TaskError) -> Result<(), TaskError> {
        if self.strict {
            return Err(problem);
        }
        self.count += 1;
        if self.first.len() < Self::NAMED {
            self.first.push(problem.to_string());
        }
        Ok(())
    }

    /// Rows skipped so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// One warning saying how many of `total` rows were skipped and naming the first.
    pub fn report(&self, task: &str, total: usize) {
        if self.count > 0 {
            tracing::warn!(
                "task `{task}`: skipped {} of {total} rows with problems (first: {}); task.args.strict=true makes \
                 the first one an error",
                self.count,
                self.first.join("; ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(row: usize) -> TaskError {
        TaskError::Row { path: "d.csv".into(), row, message: "label `x` is not 0/1".into() }
    }

    #[test]
    fn lax_counts_and_names_the_first_strict_stops() {
        let mut lax = RowProblems::new(false);
        for row in 1..=7 {
            lax.skip(problem(row)).unwrap();
        }
        assert_eq!(lax.count(), 7);
        assert_eq!(lax.first.len(), RowProblems::NAMED);
        assert_eq!(lax.first[0], "d.csv: row 1: label `x` is not 0/1");
        let err = RowProblems::new(true).skip(problem(3)).unwrap_err().to_string();
        assert_eq!(err, "d.csv: row 3: label `x` is not 0/1");
    }
}
