//! The pipeline stages around each service (being written).
