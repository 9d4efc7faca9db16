#!/usr/bin/env bash
# Builds the Java partner (tests/java/partner) once: compiles it with Maven into the workspace's
# target/java-partner/ and writes its runtime classpath there (classpath). A no-op while both are newer than the sources.
# Run by scripts/test.sh before the tests, and by the test that starts the partner.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source ../../../stack/versions.env

out=../../../target/java-partner
stamp=$out/classpath
if [[ -s "$stamp" && -z "$(find pom.xml build.sh src -newer "$stamp" -print -quit)" ]]; then
  exit 0
fi
log=$out/build.log
mkdir -p "$out"
if ! mvn -q -B -Dstyle.color=never -Dkafka.version="$KAFKA_VERSION" -Dslf4j.version="$SLF4J_VERSION" \
  compile dependency:build-classpath -Dmdep.outputFile="$out/classpath.tmp" >"$log" 2>&1; then
  tail -n 40 "$log" >&2
  echo "java partner: the Maven build failed (log: $log)" >&2
  exit 1
fi
mv "$out/classpath.tmp" "$stamp"
