-- The toy's (pretend) own dependency is down while a row names the toy worker: it then
-- raises ToyServiceDown, an outage when the toy's spec says so (WorkerSpec.is_outage).
CREATE TABLE toy_down (consumer text PRIMARY KEY);
