"""dashgate: serverless sign-up, sign-in and sign-out in front of a data dashboard."""
