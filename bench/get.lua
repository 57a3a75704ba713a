-- wrk script: linearizable GET over a 10k key space.
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/bench-" .. (counter % 10000))
end
