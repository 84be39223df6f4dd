//! KUnit and KTAP checks: which suites and the config that builds them in ([`suite`]), the
//! verdict from their results ([`judge`]), the table and JUnit XML ([`report`]), and the
//! hooks the check runs them through ([`run`]).

pub mod judge;
pub mod report;
pub mod run;
pub mod suite;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which tests a check reads and judges, resolved from the command line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TestRequest {
    /// `--kunit [SUITE_GLOB...]`: Some(empty) runs every suite the config builds.
    pub kunit: Option<Vec<String>>,
    /// `--kunit-filter`: KUnit's `kunit.filter_glob`.
    pub kunit_filter: Option<String>,
    /// `--kunitconfig PATH...`, absolute: options from these instead of the suites' own.
    pub kunitconfig: Vec<PathBuf>,
    /// `--ktap`: the command's stdout is KTAP.
    pub ktap: bool,
    /// `--kselftest TARGET...`.
    pub kselftest: Vec<String>,
    /// `--test NAME`: this one test decides.
    pub test: Option<String>,
    /// `--junit FILE`, absolute.
    pub junit: Option<PathBuf>,
    /// The KUnit config once made for this request: a bisect step makes it before it checks.
    #[serde(default)]
    pub kunit_config: Option<PathBuf>,
}
