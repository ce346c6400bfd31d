//! Write-behind journal for the switch (to be filled by the journal issue).
