-- Argo CD health check for s3connect.io/DatasetExport: Healthy once Succeeded, Degraded
-- when Failed or Stalled (waiting on a person: the message says what to do),
-- Progressing while pending, submitted or running.
local hs = {}
local status = obj.status
if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator"
  return hs
end
if status.phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = "Exported to " .. (status.destination or "its destination")
  return hs
end
local stalled, ready
if status.conditions ~= nil then
  for _, c in ipairs(status.conditions) do
    if c.type == "Stalled" and c.status == "True" then stalled = c end
    if c.type == "Ready" then ready = c end
  end
end
if status.phase == "Failed" or stalled ~= nil then
  hs.status = "Degraded"
  local c = ready or stalled
  hs.message = c ~= nil and (c.reason .. ": " .. c.message) or "The export failed"
  return hs
end
hs.status = "Progressing"
hs.message = ready ~= nil and ready.message or ("Export " .. (status.phase or "Pending"))
return hs
