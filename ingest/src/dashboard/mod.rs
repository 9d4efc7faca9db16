//! The operations dashboard (filled in below).

pub mod tally;
