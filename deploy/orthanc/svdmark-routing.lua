-- svdmark routing for Orthanc (Debian's orthanc package, 1.10 or newer).
--
--  * Every stable CT and MR series is sent to svdmark (the modality "svdmark" in DicomModalities).
--    svdmark makes the final decision: it analyses NCCT heads and SWI and records every other
--    series as ignored, with a reason, in its journal. A series that grows after it was sent
--    (late instances) is stable again later and is sent again; svdmark de-duplicates instances.
--  * Every send is a job of Orthanc's job engine (/modalities/svdmark/store, "Asynchronous"), so the
--    Lua engine never waits for the network. A send that fails (svdmark restarting, network down)
--    is retried by resubmitting the same job (/jobs/{id}/resubmit) after a capped exponential
--    backoff with jitter. The Lua engine never sleeps: on Orthanc >= 1.11 the retry queue is
--    drained by OnHeartBeat (LuaHeartBeatPeriod in orthanc.json); Orthanc 1.10 (Debian bookworm)
--    has no Lua timer, so there a detached wake-up process (sleep, then curl on the local REST
--    API; os.execute returns at once) resubmits the job when it is due. That path needs curl and
--    the REST API on 127.0.0.1 without authentication (AuthenticationEnabled false, as shipped).
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
local BACKOFF_CAP = 30                   -- seconds; longest wait between two tries (before jitter)
local RESCAN_CHANGES = 20000             -- how far back in /changes to look at start-up

local svdmarkAet = 'SVDMARK'             -- replaced by the AET configured for "svdmark"
local hasLabels = false
local hasHeartBeat = false               -- set once OnHeartBeat is called (Orthanc >= 1.11)
local httpPort = 8042                    -- replaced by this Orthanc's HttpPort (the wake-up calls it)
local jobs = {}                          -- job id -> { series = id, attempts = n }
local due = {}                           -- job id -> os.time() when it is resubmitted (heartbeat path)

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
  httpPort = (getJson('/system') or {})['HttpPort'] or httpPort
  math.randomseed(os.time())
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
  due[jobId] = nil
  pcall(RestApiPut, '/series/' .. j.series .. '/metadata/' .. FORWARD_META, os.date('!%Y-%m-%dT%H:%M:%SZ'))
end

-- Seconds before try number attempts+1: capped exponential backoff, "equal jitter" (half fixed,
-- half random), so many series failing together do not retry in lock-step.
local function backoff(attempts)
  local base = math.min(BACKOFF_CAP, 2 ^ attempts)
  return math.max(1, math.floor(base / 2 + math.random() * base / 2 + 0.5))
end

local function resubmit(jobId)
  local ok, answer = pcall(RestApiPost, '/jobs/' .. jobId .. '/resubmit', '')
  if not ok or answer == nil then
    log('could not resubmit job ' .. jobId .. ': ' .. tostring(answer))
  end
end

-- Resubmit every job whose wait is over (heartbeat path; cheap when nothing is due).
local function drain()
  local now = os.time()
  for jobId, at in pairs(due) do
    if at <= now then
      due[jobId] = nil
      resubmit(jobId)
    end
  end
end

local function schedule(jobId, delay)
  if hasHeartBeat then
    due[jobId] = os.time() + delay
    return
  end
  -- Orthanc 1.10: no Lua timer. A detached shell waits and resubmits through the local REST API;
  -- os.execute returns as soon as the shell has put it in the background.
  local url = string.format('http://127.0.0.1:%d/jobs/%s/resubmit', math.floor(httpPort), jobId)
  -- A lost wake-up would end this series' retries, so curl retries what Orthanc never answered (a refused
  -- connection, a timeout); an HTTP error (400: the job was resubmitted already, or is gone) ends the wake-up, so
  -- no second chain of retries can start for one job.
  os.execute('(sleep ' .. delay .. ' && curl -sf --max-time 30 --retry 5 --retry-connrefused --retry-delay 1 '
             .. '-X POST -d "" ' .. url .. ') >/dev/null 2>&1 </dev/null &')
end

function OnHeartBeat()
  hasHeartBeat = true
  drain()
end

function OnJobFailure(jobId)
  local j = jobs[jobId]
  if j == nil then return end
  if j.attempts >= MAX_ATTEMPTS then
    jobs[jobId] = nil
    log('giving up on series ' .. j.series .. ' after ' .. j.attempts .. ' attempts; '
        .. 'send it again with: curl -X POST http://localhost:8042/jobs/' .. jobId .. '/resubmit')
    return
  end
  local delay = backoff(j.attempts)
  j.attempts = j.attempts + 1
  log('sending series ' .. j.series .. ' failed (attempt ' .. (j.attempts - 1) .. '); retrying in ' .. delay .. ' s')
  schedule(jobId, delay)
end
