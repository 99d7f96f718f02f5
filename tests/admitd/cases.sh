# tests/admitd/cases.sh — the case bookkeeping the admitd test scripts share
# (sourced after they cd to the repo root): begin NAME, any number of
# want/wantgrep checks (the first failure is kept), then end prints one
# PASS or FAIL line and counts failures in FAILS.
FAILS=0
case_name=
case_err=
begin() { case_name=$1; case_err=; }
want() { # DESC GOT WANT
	[ -z "$case_err" ] && [ "$2" != "$3" ] && case_err="$1: got '$2', want '$3'"
	return 0
}
wantgrep() { # DESC TEXT REGEX
	[ -z "$case_err" ] && ! [[ $2 =~ $3 ]] && case_err="$1: '$2' does not match /$3/"
	return 0
}
end() {
	if [ -n "$case_err" ]; then echo "FAIL $case_name: $case_err"; FAILS=$((FAILS + 1))
	else echo "PASS $case_name"; fi
}
