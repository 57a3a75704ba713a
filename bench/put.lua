-- wrk script: PUT a 128-byte value to keys spread over a 10k key space.
local value = string.rep("x", 128)
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/bench-" .. (counter % 10000), nil, value)
end
