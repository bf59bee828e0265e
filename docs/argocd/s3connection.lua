-- Argo CD health check for s3connect.io/S3Connection: Healthy when Ready, Degraded when
-- the operator is Stalled (someone must fix something: the message says what),
-- Progressing while it validates or retries by itself.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the connection"
  return hs
end
if obj.metadata.generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < obj.metadata.generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the new spec"
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
elseif ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.reason .. ": " .. ready.message
else
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to validate the connection"
end
return hs
