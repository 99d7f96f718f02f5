#!/usr/bin/env bash
# test-classes — node classes in admission, on the real admitd and ledgerd:
# nodes report their class ("cpu", "h100", an operator's label), whether
# their slots are GPUs, and their GPUs, in the heartbeat noded sends (driven
# here with curl, as test-admitd.sh does); each class is priced at the
# ledger's rate for it; a job is priced on every class that may run it (its
# device, node_class, what the GPU backend trains) and placed within the one
# chosen; each class has its own queue, so a job waiting for GPUs does not
# hold back one that fits the CPUs; bad class reports are refused with a
# sentence.
set -u
cd "$(dirname "$0")/../.."
NAME=classes
ADMITD_ARGS="--policy fifo"
. tests/admitd/harness.sh

GPT2='{"model_type":"gpt2","n_layer":2,"n_head":2,"n_embd":64,"n_positions":64,"vocab_size":256}'
LLAMA='{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":2,"num_key_value_heads":2,"max_position_embeddings":64,"vocab_size":256}'
GPUS='[{"index":0,"name":"NVIDIA H100 80GB HBM3","uuid":"GPU-0","mem_bytes":85899345920},{"index":1,"name":"NVIDIA H100 80GB HBM3","uuid":"GPU-1","mem_bytes":85899345920}]'
hb() { # NODE SLOTS FLOPS EXTRA REPORTS
	api POST /v1/nodes/heartbeat "{\"node\":\"$1\",\"addr\":\"127.0.0.1\",\"slots\":$2,\"flops_per_slot\":$3${4:+,$4},\"jobs\":[${5:-}]}"
}
job_body() { # MODEL PARAMS
	echo "{\"tenant\":\"acme\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/bundles/b-1\",\"name\":\"t\",\"model\":$1,\"params\":$2}"
}
submit() { api POST /v1/jobs "$(job_body "$@")"; settle; }
estimate() { api POST /v1/estimate "{\"model\":$1,\"params\":$2}"; }

# rates before admitd starts: it reads them at start
lapi POST /v1/rates '{"rank_hour": {"cpu": 0.72, "h100": 7.2}, "kwh": 0.15}'
lapi POST /v1/credits '{"source":"admin","seq":1,"tenant":"acme","amount_micro":100000000}'
start

begin nodes_report_classes
hb c1 4 2e10
want cpu "$CODE" 200
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS"
want gpu "$CODE" 200
api GET /v1/nodes
want listed "$(j '[(n["id"], n["class"], n["device"], len(n["gpus"])) for n in d["nodes"]]')" "[('c1', 'cpu', 'cpu', 0), ('g1', 'h100', 'cuda', 2)]"
want gpu_name "$(j 'd["nodes"][1]["gpus"][0]["name"]')" "NVIDIA H100 80GB HBM3"
end

begin bad_class_reports_refused
hb x1 1 1e9 '"class":"H100!"'
want bad_name "$CODE $(j 'd["error"]')" "400 'class' must be a node class name of 1-32 chars [a-z0-9_.-]"
hb x1 3 1e9 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS"
want slots_over_gpus "$CODE $(j 'd["error"]')" "400 a GPU node (device cuda) offers one slot per GPU: 'slots' 3 exceeds the 2 GPUs in 'gpus'"
hb x1 1 1e9 '"class":"h100","device":"cpu"'
want mixed_class "$CODE $(j 'd["error"]')" "409 node class h100 trains on GPUs on node g1 and this node's slots are CPUs; give this node a class of its own (bursar-noded --class)"
hb x1 1 1e9 '"device":"tpu"'
want bad_device "$CODE" 400
api GET /v1/nodes
want not_registered "$(j 'len(d["nodes"])')" 2
end

begin estimate_per_class_rate
estimate "$GPT2" '{"steps":100000,"batch":8,"device":"cuda"}'
want gpu "$CODE $(j 'd["node_class"], d["device"], round(d["rank_second"], 6)')" "200 ('h100', 'cuda', 0.002)"
estimate "$GPT2" '{"steps":100000,"batch":8,"device":"cpu"}'
want cpu "$CODE $(j 'd["node_class"], d["device"], round(d["rank_second"], 6)')" "200 ('cpu', 'cpu', 0.0002)"
estimate "$GPT2" '{"steps":100000,"batch":8}'
want auto_fastest "$(j 'd["node_class"]')" h100
wantgrep auto_explain "$(j 'd["explain"]')" "^[0-9]+ ranks? on h100: .* \(fastest\).*; or [0-9]+ ranks? on cpu: "
want candidates "$(j 'sorted(set(c["node_class"] for c in d["candidates"]))')" "['cpu', 'h100']"
end

begin gpu_backend_limits_keep_jobs_on_cpus
estimate "$LLAMA" '{"steps":100,"batch":8}'
want llama_cpu "$CODE $(j 'd["node_class"]')" "200 cpu"
wantgrep llama_why "$(j 'd["explain"]')" "not on h100: node class h100 trains on GPUs and the CUDA backend trains GPT-2 only so far"
estimate "$LLAMA" '{"steps":100,"batch":8,"device":"cuda"}'
want llama_cuda "$CODE" 400
wantgrep llama_cuda_why "$(j 'd["error"]')" "^no node class that is up can run it: .*GPT-2 only so far"
estimate "$GPT2" '{"steps":100,"batch":8,"zero":1}'
want zero_cpu "$(j 'd["node_class"]')" cpu
end

begin unknown_class_rejected
submit "$GPT2" '{"steps":100,"batch":8,"node_class":"a100"}'
want state "$CODE $(j 'd["state"]')" "201 failed"
wantgrep why "$(j 'd["reason"]')" "^rejected: no node class that is up can run it: it asks for node class a100"
api POST /v1/estimate "{\"model\":$GPT2,\"params\":{\"node_class\":\"A100\"}}"
want bad_param "$CODE" 400
end

begin class_without_rate_not_offered
hb f1 2 1e11 '"class":"fast"'
estimate "$GPT2" '{"steps":100,"batch":8,"node_class":"fast"}'
want refused "$CODE" 400
wantgrep why "$(j 'd["error"]')" "the ledger has no rate for node class fast"
estimate "$GPT2" '{"steps":100000,"batch":8,"device":"cpu"}'
want cpu_still "$(j 'd["node_class"]')" cpu
end

begin gpu_job_placed_on_gpu_node
submit "$GPT2" '{"steps":100000,"batch":8,"device":"cuda","ranks":2}'
G1=$(j 'd["id"]')
want state "$(j 'd["state"], d["estimate"]["node_class"]')" "('running', 'h100')"
wantgrep where "$(j 'd["reason"]')" "^running on g1 ranks 0-1"
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS"
want launched "$(j '[l["job"] for l in d["launch"]]')" "['$G1']"
end

begin classes_queue_apart
submit "$GPT2" '{"steps":100000,"batch":8,"device":"cuda"}'
G2=$(j 'd["id"]')
want gpu_waits "$(j 'd["state"]')" queued
wantgrep gpu_why "$(j 'd["reason"]')" "^queued: next in line on h100, needs [0-9]+ ranks? \(0 free of 2\)"
submit "$GPT2" '{"steps":100,"batch":8,"device":"cpu","ranks":2}'
C1=$(j 'd["id"]')
want cpu_runs "$(j 'd["state"]')" running
wantgrep cpu_where "$(j 'd["reason"]')" "^running on c1 ranks 0-1"
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS" "{\"job\":\"$G1\",\"state\":\"succeeded\",\"output_dir\":\"/srv/out\"}"
api GET "/v1/jobs/$G2"
want gpu_starts_when_free "$(j 'd["state"]')" running
end

begin preemption_stays_in_class
PROG='"progress":{"step":5,"steps":100,"loss":4.5,"first_loss":5.6,"tokens_per_s":9000,"elapsed_s":2}'
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS" "{\"job\":\"$G2\",\"state\":\"running\",$PROG}"
hb c1 4 2e10 "" "{\"job\":\"$C1\",\"state\":\"running\",$PROG}"
api POST /v1/jobs "{\"tenant\":\"acme\",\"user\":\"alice\",\"bundle_id\":\"b-1\",\"bundle_dir\":\"/srv/bundles/b-1\",\"name\":\"t\",\"priority\":50,\"model\":$GPT2,\"params\":{\"steps\":100000,\"batch\":8,\"device\":\"cuda\",\"ranks\":2}}"
settle
want urgent_waits "$(j 'd["state"]')" queued
hb c1 4 2e10 "" "{\"job\":\"$C1\",\"state\":\"running\",$PROG}"
want cpu_job_left_alone "$(j 'd["preempt"]')" "[]"
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS" "{\"job\":\"$G2\",\"state\":\"running\",$PROG}"
want gpu_job_preempted "$(j 'd["preempt"]')" "['$G2']"
end

begin node_routes_need_the_operator
# consoled forwards its caller's role; admitd refuses a user by itself too
for path in "GET /v1/nodes" "POST /v1/nodes/g1/reprobe"; do
	code=$(curl -s -o "$T/resp" -w '%{http_code}' --unix-socket "$SOCK" -X "${path% *}" \
		-H 'X-Bursar-Role: user' -H 'X-Bursar-Tenant: acme' "http://admitd${path#* }")
	want "user ${path}" "$code $(j 'd["error"]' | grep -o 'needs the operator role')" "403 needs the operator role"
	code=$(curl -s -o /dev/null -w '%{http_code}' --unix-socket "$SOCK" -X "${path% *}" \
		-H 'X-Bursar-Role: operator' "http://admitd${path#* }")
	want "operator ${path}" "$code" "$([ "${path% *}" = GET ] && echo 200 || echo 202)"
done
end

begin restart_keeps_classes
crash
start
api GET "/v1/jobs/$G2"
want job "$(j 'd["state"], d["estimate"]["node_class"]')" "('running', 'h100')"
api GET /v1/nodes
want node "$(j '[n["class"] for n in d["nodes"] if n["id"] == "g1"]')" "['h100']"
end

begin stranded_jobs_move_to_a_class_that_is_up
# the GPU node goes silent: a job that may run anywhere is priced again on the
# CPUs and starts there; one that asks for a GPU keeps waiting for it
crash
NODE_TIMEOUT=3 start
hb c1 4 2e10 "" "{\"job\":\"$C1\",\"state\":\"running\"}"
hb g1 2 5e13 "\"class\":\"h100\",\"device\":\"cuda\",\"gpus\":$GPUS" "{\"job\":\"$G2\",\"state\":\"running\"}"
submit "$GPT2" '{"steps":100000,"batch":8,"ranks":2}'
A=$(j 'd["id"]')
want a_queued_for_gpus "$(j 'd["state"], d["estimate"]["node_class"]')" "('queued', 'h100')"
submit "$GPT2" '{"steps":100000,"batch":8,"device":"cuda","ranks":2}'
B=$(j 'd["id"]')
for _ in $(seq 40); do # c1 keeps reporting, g1 is silent
	hb c1 4 2e10 "" "{\"job\":\"$C1\",\"state\":\"running\"}"
	api GET "/v1/jobs/$A"
	[ "$(j 'd["estimate"]["node_class"]')" = cpu ] && [ "$(j 'd["state"]')" = running ] && break
	sleep 0.25
done
want a_moved "$(j 'd["state"], d["estimate"]["node_class"]')" "('running', 'cpu')"
wantgrep a_why "$(j '[e["reason"] for e in d["events"] if e["state"] == "priced"][-1]')" "^re-priced: no node of class h100 is up, so on cpu: 2 ranks: "
api GET "/v1/jobs/$B"
want b_waits "$(j 'd["state"], d["estimate"]["node_class"], d["reason"]')" "('queued', 'h100', 'queued: no node of class h100 is up; it starts when one is back')"
end

begin rate_set_later_is_used_after_a_refresh
# an operator sets the missing rate: POST /v1/rates/refresh (what consoled
# calls after a rate change) makes admission price with it at once instead
# of at its next minute's read; a user may not ask for it. Last: the
# ledger keeps a class's rate from then on
hb f1 2 1e11 '"class":"fast"'
lapi POST /v1/rates '{"rank_hour": {"cpu": 0.72, "h100": 7.2, "fast": 1.8}, "kwh": 0.15}'
want set "$LCODE" 200
V=$(lj 'd["version"]')
code=$(curl -s -o "$T/resp" -w '%{http_code}' --unix-socket "$SOCK" -X POST \
	-H 'X-Bursar-Role: user' -H 'X-Bursar-Tenant: acme' http://admitd/v1/rates/refresh)
want user_refused "$code $(j '"operator role" in d["error"]')" "403 True"
estimate "$GPT2" '{"steps":100,"batch":8,"node_class":"fast"}'
want not_yet "$CODE" 400
api POST /v1/rates/refresh
want refreshed "$CODE $(j 'd["version"], round(d["rank_second"]["fast"], 6)')" "200 ($V, 0.0005)"
estimate "$GPT2" '{"steps":100,"batch":8,"node_class":"fast"}'
want offered "$CODE $(j 'd["node_class"], round(d["rank_second"], 6)')" "200 ('fast', 0.0005)"
end

[ "$FAILS" -eq 0 ]
