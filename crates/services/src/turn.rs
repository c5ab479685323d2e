//! The turn-taking stage (being written).
