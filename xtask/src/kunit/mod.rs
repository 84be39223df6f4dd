//! KUnit and KTAP checks: which suites and the config that builds them in ([`suite`]), the
//! verdict from their results ([`judge`]), the table and JUnit XML ([`report`]), and the
//! hooks the check runs them through ([`run`]), as its [`crate::vm::TestRequest`] asks.

pub mod judge;
pub mod report;
pub mod run;
pub mod suite;
