"""Pure decisions the loop applies: placement, settling an attempt, health rules, failure reasons."""
