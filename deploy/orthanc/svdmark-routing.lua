-- svdmark routing for Orthanc (Debian's orthanc package, 1.10 or newer).
--
--  * Every stable CT and MR series is sent to svdmark (the modality "svdmark" in DicomModalities).
--    svdmark makes the final decision: it analyses NCCT heads and SWI and records every other
--    series as ignored, with a reason, in its journal. A series that grows after it was sent
--    (late instances) is stable again later and is sent again; svdmark de-duplicates instances.
--  * A send that fails (svdmark restarting, network down) is retried with a capped backoff.
--    When Orthanc itself restarts, series that were never confirmed as sent are sent again.
--  * When svdmark's results (SR, SEG, summary image) arrive, the study gets the metadata
--    "svdmark-results" (the kinds received, e.g. "OT,SEG,SR") and, on Orthanc >= 1.12,
--    the label "svdmark-results". The source series gets "svdmark-forwarded" once sent.
--
-- Results are recognised by their origin (sent by svdmark's AE title) or their header
-- (Manufacturer / Model "svdmark..." or SeriesDescription "svdmark ..."); they are never
-- forwarded back to svdmark.

local SVDMARK = 'svdmark'                -- symbolic name of svdmark in DicomModalities
local FORWARD = { CT = true, MR = true } -- modalities sent to svdmark
local RESULT_META = 'svdmark-results'    -- study metadata  (UserMetadata, see orthanc.json)
local FORWARD_META = 'svdmark-forwarded' -- series metadata (UserMetadata, see orthanc.json)
local LABEL = 'svdmark-results'          -- study label (Orthanc >= 1.12 only)
local MAX_ATTEMPTS = 15                  -- sends per stable series before giving up (logged)
local BACKOFF_CAP = 30                   -- seconds; the Lua engine waits between two tries
local RESCAN_CHANGES = 20000             -- how far back in /changes to look at start-up

local svdmarkAet = 'SVDMARK'             -- replaced by the AET configured for "svdmark"
local hasLabels = false
local jobs = {}                          -- job id -> { series = id, attempts = n }

local function log(msg)
  print('svdmark-routing: ' .. msg)
end

local function startsWith(s, prefix)
  return s ~= nil and string.lower(string.sub(s, 1, string.len(prefix))) == string.lower(prefix)
end

-- Orthanc's RestApi*() return nil (and log an error) on failure; these never raise.
local function getJson(uri)
  local ok, answer = pcall(RestApiGet, uri)
  if ok and answer ~= nil and answer ~= '' then
    local okJ, value = pcall(ParseJson, answer)
    if okJ then return value end
  end
  return nil
end

local function version()
  local system = getJson('/system')
  if system == nil then return 0, 0 end
  local v = system['Version'] or '0.0'
  local major, minor = string.match(v, '^(%d+)%.(%d+)')
  return tonumber(major or 0), tonumber(minor or 0)
end

local function metadata(level, id, name)
  local names = getJson('/' .. level .. '/' .. id .. '/metadata') or {}
  for _, n in ipairs(names) do
    if n == name then
      local ok, value = pcall(RestApiGet, '/' .. level .. '/' .. id .. '/metadata/' .. name)
      if ok then return value end
    end
  end
  return nil
end

-- Is this series (or instance) one of svdmark's results?
local function isResult(tags, remoteAet)
  if remoteAet ~= nil and remoteAet == svdmarkAet then return true end
  return startsWith(tags['Manufacturer'], 'svdmark')
      or startsWith(tags['ManufacturerModelName'], 'svdmark')
      or startsWith(tags['SeriesDescription'], 'svdmark ')
end

local function seriesOrigin(seriesId)
  local series = getJson('/series/' .. seriesId)
  if series == nil then return nil end
  local instances = series['Instances'] or {}
  if #instances == 0 then return nil end
  return metadata('instances', instances[1], 'RemoteAET')
end

local function markStudy(studyId, kind)
  local kinds = {}
  local current = metadata('studies', studyId, RESULT_META)
  if current ~= nil then
    for k in string.gmatch(current, '[^,]+') do kinds[k] = true end
  end
  if kinds[kind] and (not hasLabels) then return end
  kinds[kind] = true
  local list = {}
  for k, _ in pairs(kinds) do table.insert(list, k) end
  table.sort(list)
  RestApiPut('/studies/' .. studyId .. '/metadata/' .. RESULT_META, table.concat(list, ','))
  if hasLabels then
    pcall(RestApiPut, '/studies/' .. studyId .. '/labels/' .. LABEL, '')
  end
  log('results (' .. kind .. ') arrived for study ' .. studyId)
end

local function send(seriesId, attempts)
  local body = '{"Resources":["' .. seriesId .. '"],"Asynchronous":true}'
  local ok, answer = pcall(RestApiPost, '/modalities/' .. SVDMARK .. '/store', body)
  if not ok or answer == nil or answer == '' then
    log('could not submit series ' .. seriesId .. ' to ' .. SVDMARK .. ': ' .. tostring(answer))
    return
  end
  local okJ, reply = pcall(ParseJson, answer)
  local job = nil
  if okJ and reply ~= nil then job = reply['ID'] end
  if job ~= nil then
    jobs[job] = { series = seriesId, attempts = attempts }
  end
end

local function forwardable(seriesId, tags)
  if not FORWARD[tags['Modality'] or ''] then return false end
  if isResult(tags, seriesOrigin(seriesId)) then return false end
  return true
end

function Initialize()
  local major, minor = version()
  hasLabels = (major > 1) or (major == 1 and minor >= 12)
  local modality = getJson('/modalities/' .. SVDMARK .. '/configuration')
  if modality ~= nil then
    svdmarkAet = modality['AET'] or svdmarkAet
  else
    log('modality "' .. SVDMARK .. '" is not in DicomModalities: nothing will be routed')
    return
  end
  log('routing stable CT/MR series to ' .. SVDMARK .. ' (AET ' .. svdmarkAet .. '), labels: '
      .. tostring(hasLabels))

  -- After a restart: send again what was received but never confirmed as sent
  -- (Orthanc forgets series that were not yet stable when it stopped).
  local last = (getJson('/changes?last') or {})['Last'] or 0
  local since = math.max(0, last - RESCAN_CHANGES)
  local seen, resend = {}, 0
  while since < last do
    local page = getJson('/changes?since=' .. since .. '&limit=1000') or { Done = true }
    for _, change in ipairs(page['Changes'] or {}) do
      if change['ResourceType'] == 'Series' and not seen[change['ID']]
          and (change['ChangeType'] == 'NewSeries' or change['ChangeType'] == 'StableSeries') then
        seen[change['ID']] = true
        local series = getJson('/series/' .. change['ID'])
        if series ~= nil then
          if metadata('series', change['ID'], FORWARD_META) == nil
              and forwardable(change['ID'], series['MainDicomTags'] or {}) then
            send(change['ID'], 1)
            resend = resend + 1
          end
        end
      end
    end
    if page['Done'] or page['Last'] == nil or page['Last'] <= since then break end
    since = page['Last']
  end
  if resend > 0 then log('re-sending ' .. resend .. ' series not confirmed before the restart') end
end

function OnStableSeries(seriesId, tags, seriesMetadata)
  if not FORWARD[tags['Modality'] or ''] then
    return
  end
  if isResult(tags, seriesOrigin(seriesId)) then
    return
  end
  send(seriesId, 1)
end

function OnStoredInstance(instanceId, tags, instanceMetadata, origin)
  local remote = nil
  if origin ~= nil then remote = origin['RemoteAet'] end
  if not isResult(tags, remote) then return end
  local study = getJson('/instances/' .. instanceId .. '/study')
  if study ~= nil then
    markStudy(study['ID'], tags['Modality'] or 'OT')
  end
end

function OnJobSuccess(jobId)
  local j = jobs[jobId]
  if j == nil then return end
  jobs[jobId] = nil
  pcall(RestApiPut, '/series/' .. j.series .. '/metadata/' .. FORWARD_META, os.date('!%Y-%m-%dT%H:%M:%SZ'))
end

function OnJobFailure(jobId)
  local j = jobs[jobId]
  if j == nil then return end
  jobs[jobId] = nil
  if j.attempts >= MAX_ATTEMPTS then
    log('giving up on series ' .. j.series .. ' after ' .. j.attempts .. ' attempts; '
        .. 'send it again with: curl -X POST http://localhost:8042/modalities/' .. SVDMARK .. '/store -d \'["'
        .. j.series .. '"]\'')
    return
  end
  local delay = math.min(BACKOFF_CAP, 2 ^ j.attempts)
  log('sending series ' .. j.series .. ' failed (attempt ' .. j.attempts .. '); retrying in ' .. delay .. ' s')
  -- Lua in Orthanc 1.10 has no timers (OnHeartBeat came in 1.11): wait here. Other Lua
  -- events queue up meanwhile and are handled afterwards; nothing is dropped.
  os.execute('sleep ' .. delay)
  send(j.series, j.attempts + 1)
end
