#!/usr/bin/env ruby
# Ruby threads using Dalli must never be stalled by the shim (tests/integration/test_fastpath.py).
# Usage: stall_dalli.rb HOST PORT SECONDS THREADS KEYS
# THREADS threads each with their own Dalli client do set/get for SECONDS while a
# ticker thread wakes every 10 ms and records how late it is (Ruby threads share the
# GVL: a call that blocked in C without releasing it would stall them all). The test
# freezes one server meanwhile. Prints one JSON object.
require "dalli"
require "json"

host, port, seconds, threads, keys = ARGV[0], ARGV[1].to_i, ARGV[2].to_f, ARGV[3].to_i, ARGV[4].to_i
tick = 0.010
stop = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
now = -> { Process.clock_gettime(Process::CLOCK_MONOTONIC) }
late = []
ops = 0
errors = []
lock = Mutex.new

ticker = Thread.new do
  nxt = now.call + tick
  while now.call < stop
    d = nxt - now.call
    sleep(d) if d > 0
    late << [0.0, now.call - nxt].max
    nxt += tick
  end
end

workers = (0...threads).map do |i|
  Thread.new do
    c = Dalli::Client.new("#{host}:#{port}", socket_timeout: 5, socket_max_failures: 1000, down_retry_delay: 0.1)
    n = 0
    while now.call < stop
      key = "dl-#{i}-#{n % keys}"
      begin
        c.set(key, "ok", 0, raw: true)
        c.get(key)
      rescue Dalli::DalliError, Dalli::RingError, IOError, SystemCallError => e
        lock.synchronize { errors << e.class.name + ": " + e.message }
      end
      lock.synchronize { ops += 2 }
      n += 1
    end
  end
end

ticker.join
workers.each(&:join)
late.sort!
p99 = late.empty? ? nil : late[(late.size * 0.99).to_i - 1]
puts JSON.generate({ "ticks" => late.size, "max_late_s" => late.last, "p99_late_s" => p99, "ops" => ops,
                     "errors" => errors.size, "error_samples" => errors.first(5) })
