# Shell helpers of the bench scripts (sourced, after they set `root` and define `die`).

free_port() { # a free loopback port, never one of the well-known ones
  local p
  while :; do
    p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    case $p in 80|443|6379|8000|8080|9090) ;; *) echo "$p"; return ;; esac
  done
}

wait_port() { # wait_port PORT [LOG]: until something listens on PORT (LOG's tail if never)
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done
  die "nothing listens on $1${2:+: $(tail -5 "$2" 2>/dev/null)}"
}

render() { # render TEMPLATE OUT KEY=VALUE...: bench/configs/TEMPLATE with @KEY@ replaced
  local tpl=$root/bench/configs/$1 out=$2 kv expr=()
  shift 2
  for kv in "$@"; do expr+=(-e "s|@${kv%%=*}@|${kv#*=}|g"); done
  sed "${expr[@]}" "$tpl" >"$out"
  ! grep -q '@[A-Z_]*@' "$out" || die "unreplaced placeholder in $out"
}

log_field() { # log_field LOG FIELD: FIELD of the first line of the gateway's LOG that has it (empty if none yet)
  grep -o "\"$2\":\"[^\"]*\"" "$1" 2>/dev/null | head -1 | cut -d'"' -f4 || true
}

gateway_addr() { # gateway_addr LOG NAME: where the gateway logging to LOG listens, once its "listening" line is there
  local a _
  for _ in $(seq 200); do
    a=$(log_field "$1" listen)
    if [ -n "$a" ]; then echo "$a"; return 0; fi
    sleep 0.05
  done
  die "$2 did not start: $(cat "$1")"
}

wrk_fields() { # wrk_fields FILE: "rps p50_ms p99_ms requests non2xx socket_errors" of wrk --latency output in FILE
  awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /m$/) return v * 60000; if (v ~ /s$/) return v * 1000; return v }
    /Requests\/sec/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    / requests in / { n = $1 }
    /Non-2xx or 3xx responses/ { bad = $NF }
    /Socket errors/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
    END { if (rps == "" || n == 0) exit 1; printf "%s %.3f %.3f %d %d %d", rps, p50, p99, n, bad, err }' "$1"
}

keepalive_get() { # keepalive_get HOST:PORT N: N requests for / on one keep-alive connection
  python3 - "$1" "$2" <<'PY'
import http.client, sys
host, port = sys.argv[1].rsplit(":", 1)
c = http.client.HTTPConnection(host, int(port))
for _ in range(int(sys.argv[2])):
    c.request("GET", "/")
    c.getresponse().read()
PY
}
