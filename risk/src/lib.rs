//! Risk stage for the switch (to be filled by the risk issue).
