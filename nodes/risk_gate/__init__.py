"""The risk-management service: the gate every raw signal passes (see nodes/risk for the rules)."""
