"""`detector test-rule`: rule tests as data, condition explanations, log replays."""
