//! health (work in progress)
