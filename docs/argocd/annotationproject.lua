-- Argo CD health check for s3connect.io/AnnotationProject: Healthy when Ready (its template and
-- project exist and match the spec), Degraded when Failed or Stalled (waiting on a person:
-- the message says what to do), Progressing while it waits for its datasets or is created.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see the new spec"
  return hs
end
local ready, stalled, reconciling
for _, c in ipairs(status.conditions) do
  if c.type == "Ready" then ready = c end
  if c.type == "Stalled" and c.status == "True" then stalled = c end
  if c.type == "Reconciling" and c.status == "True" then reconciling = c end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
elseif stalled ~= nil then
  hs.status = "Degraded"
  local c = ready or stalled
  hs.message = c.reason .. ": " .. c.message
elseif reconciling ~= nil then
  hs.status = "Progressing"
  local c = ready or reconciling
  hs.message = c.reason .. ": " .. c.message
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = ready ~= nil and (ready.reason .. ": " .. ready.message) or "The dataset failed"
else
  hs.status = "Progressing"
  hs.message = ready ~= nil and ready.message or ("Dataset " .. (status.phase or "Pending"))
end
return hs
