-- Deliveries are claimed endpoint by endpoint through webhook_deliveries_endpoint_due
-- (endpoint_id, next_attempt_at). With a second index on next_attempt_at alone, the planner
-- could scan every due delivery of every endpoint once per endpoint visited (seen: 300 ms a
-- claim with 1,000 endpoints and 2,000 due deliveries); nothing else reads by due time
-- across endpoints, so that index goes.
DROP INDEX webhook_deliveries_due;
