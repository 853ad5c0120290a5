{{- define "deepwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "deepwatch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{/* 40, not 63: operators append suffixes (ECK "-es-elastic-user", Strimzi "-kafka-bootstrap"). */}}

{{- define "deepwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "deepwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: deepwatch
{{- end -}}

{{/* selector labels of one component: (dict "ctx" $ "component" "crawler") */}}
{{- define "deepwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "deepwatch.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "deepwatch.componentLabels" -}}
{{ include "deepwatch.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "deepwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "deepwatch.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* image of a variant: (dict "ctx" $ "variant" "cpu") */}}
{{- define "deepwatch.image" -}}
{{- $tag := default .ctx.Chart.AppVersion .ctx.Values.image.tag -}}
{{- printf "%s:%s-%s" .ctx.Values.image.repository $tag .variant -}}
{{- end -}}

{{/* --- names of the dependencies and of what their operators create --- */}}
{{- define "deepwatch.kafkaName" -}}{{ include "deepwatch.fullname" . }}-kafka{{- end -}}
{{- define "deepwatch.esName" -}}{{ include "deepwatch.fullname" . }}-es{{- end -}}
{{- define "deepwatch.minioName" -}}{{ include "deepwatch.fullname" . }}-minio{{- end -}}
{{- define "deepwatch.apiServiceName" -}}{{ include "deepwatch.fullname" . }}-api{{- end -}}
{{- define "deepwatch.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "deepwatch.fullname" .)) .Values.apiKeys.existingSecret -}}
{{- end -}}
{{- define "deepwatch.minioSecret" -}}
{{- default (include "deepwatch.minioName" .) .Values.minio.auth.existingSecret -}}
{{- end -}}

{{- define "deepwatch.kafkaBootstrap" -}}
{{- if .Values.kafka.enabled -}}
{{- printf "%s-kafka-bootstrap:9092" (include "deepwatch.kafkaName" .) -}}
{{- else if .Values.kafka.external.bootstrap -}}
{{- .Values.kafka.external.bootstrap -}}
{{- else -}}
{{- fail "kafka.enabled is false: set kafka.external.bootstrap (host:port[,host:port])" -}}
{{- end -}}
{{- end -}}

{{- define "deepwatch.esUrl" -}}
{{- if .Values.elasticsearch.enabled -}}
{{- printf "https://%s-es-http:9200" (include "deepwatch.esName" .) -}}
{{- else if .Values.elasticsearch.external.url -}}
{{- .Values.elasticsearch.external.url -}}
{{- else -}}
{{- fail "elasticsearch.enabled is false: set elasticsearch.external.url" -}}
{{- end -}}
{{- end -}}

{{- define "deepwatch.esCaSecret" -}}
{{- if .Values.elasticsearch.enabled -}}
{{- printf "%s-es-http-certs-public" (include "deepwatch.esName" .) -}}
{{- else -}}
{{- .Values.elasticsearch.external.caSecret -}}
{{- end -}}
{{- end -}}

{{- define "deepwatch.s3Endpoint" -}}
{{- if .Values.minio.enabled -}}
{{- printf "%s:9000" (include "deepwatch.minioName" .) -}}
{{- else if .Values.minio.external.endpoint -}}
{{- .Values.minio.external.endpoint -}}
{{- else -}}
{{- fail "minio.enabled is false: set minio.external.endpoint" -}}
{{- end -}}
{{- end -}}

{{/* The settings file. Chart-managed keys come last so that `config` cannot point a part elsewhere. */}}
{{- define "deepwatch.settings" -}}
{{- $s := deepCopy .Values.config -}}
{{- $_ := set $s "data_dir" "/var/lib/deepwatch" -}}
{{- $_ := set $s "sources_file" "/etc/deepwatch/sources.yaml" -}}
{{- /* the crawler's and worker's health and metrics servers answer kubelet probes and Prometheus */ -}}
{{- $_ := set $s "probe_host" "0.0.0.0" -}}
{{- $_ := set $s "worker_store" .Values.worker.tableStore -}}
{{- $_ := set $s "kafka_bootstrap" (include "deepwatch.kafkaBootstrap" .) -}}
{{- $_ := set $s "kafka_partitions" .Values.kafka.topics.partitions -}}
{{- $_ := set $s "kafka_replication" .Values.kafka.topics.replicas -}}
{{- $_ := set $s "index_backend" "elasticsearch" -}}
{{- $_ := set $s "es_url" (include "deepwatch.esUrl" .) -}}
{{- $_ := set $s "es_index_prefix" .Values.elasticsearch.indexPrefix -}}
{{- if include "deepwatch.esCaSecret" . -}}
{{- $_ := set $s "es_ca_certs" "/etc/deepwatch/es-ca/ca.crt" -}}
{{- end -}}
{{- $_ := set $s "store_backend" "s3" -}}
{{- $_ := set $s "s3_endpoint" (include "deepwatch.s3Endpoint" .) -}}
{{- if .Values.minio.enabled -}}
{{- $_ := set $s "s3_bucket" .Values.minio.bucket -}}
{{- $_ := set $s "s3_secure" false -}}
{{- with .Values.minio.publicUrl }}{{ $_ := set $s "s3_public_url" . }}{{ end -}}
{{- else -}}
{{- $_ := set $s "s3_bucket" .Values.minio.external.bucket -}}
{{- $_ := set $s "s3_secure" .Values.minio.external.secure -}}
{{- with .Values.minio.external.region }}{{ $_ := set $s "s3_region" . }}{{ end -}}
{{- with .Values.minio.publicUrl }}{{ $_ := set $s "s3_public_url" . }}{{ end -}}
{{- end -}}
{{- $_ := set $s "serve_url" (printf "http://%s:%d" (include "deepwatch.apiServiceName" .) (int .Values.ray.serve.port)) -}}
{{- if .Values.models.existingClaim -}}
{{- $_ := set $s "models_dir" "/models" -}}
{{- end -}}
{{- toYaml $s -}}
{{- end -}}

{{/* Environment of every deepwatch container: (dict "ctx" $ "es" true "s3" true "api" true) */}}
{{- define "deepwatch.env" -}}
{{- $v := .ctx.Values -}}
- name: DEEPWATCH_CONFIG
  value: /etc/deepwatch/config.yaml
# Libraries that cache under $HOME need a writable one; the root filesystem is read-only.
- name: HOME
  value: /tmp
{{- if .api }}
- name: DEEPWATCH_API_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ include "deepwatch.apiKeysSecret" .ctx }}
      key: {{ if $v.apiKeys.existingSecret }}{{ $v.apiKeys.existingSecretKey }}{{ else }}api-keys{{ end }}
{{- end }}
{{- if .es }}
{{- if $v.elasticsearch.enabled }}
# ECK's built-in superuser; in the environment rather than the ConfigMap, which holds nothing about credentials.
- name: DEEPWATCH_ES_USERNAME
  value: elastic
- name: DEEPWATCH_ES_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ include "deepwatch.esName" .ctx }}-es-elastic-user
      key: elastic
{{- else if $v.elasticsearch.external.existingSecret }}
{{- $ext := $v.elasticsearch.external }}
{{- if $ext.apiKeyKey }}
- name: DEEPWATCH_ES_API_KEY
  valueFrom:
    secretKeyRef: {name: {{ $ext.existingSecret }}, key: {{ $ext.apiKeyKey }}}
{{- else }}
- name: DEEPWATCH_ES_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ $ext.existingSecret }}, key: {{ $ext.usernameKey }}}
- name: DEEPWATCH_ES_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ $ext.existingSecret }}, key: {{ $ext.passwordKey }}}
{{- end }}
{{- end }}
{{- end }}
{{- if .s3 }}
{{- if $v.minio.enabled }}
- name: DEEPWATCH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "deepwatch.minioSecret" .ctx }}, key: root-user}
- name: DEEPWATCH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ include "deepwatch.minioSecret" .ctx }}, key: root-password}
{{- else if $v.minio.external.existingSecret }}
- name: DEEPWATCH_S3_ACCESS_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.minio.external.existingSecret }}, key: {{ $v.minio.external.accessKeyKey }}}
- name: DEEPWATCH_S3_SECRET_KEY
  valueFrom:
    secretKeyRef: {name: {{ $v.minio.external.existingSecret }}, key: {{ $v.minio.external.secretKeyKey }}}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volumes every deepwatch pod mounts: (dict "ctx" $ "es" true "models" true "data" "<volume source yaml or empty>") */}}
{{- define "deepwatch.volumes" -}}
- name: config
  configMap:
    name: {{ include "deepwatch.fullname" .ctx }}
- name: tmp
  emptyDir: {}
{{- if .es }}
{{- with include "deepwatch.esCaSecret" .ctx }}
- name: es-ca
  secret:
    secretName: {{ . }}
    items:
      - {key: ca.crt, path: ca.crt}
{{- end }}
{{- end }}
{{- if and .models .ctx.Values.models.existingClaim }}
- name: models
  persistentVolumeClaim:
    claimName: {{ .ctx.Values.models.existingClaim }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "deepwatch.volumeMounts" -}}
- name: config
  mountPath: /etc/deepwatch
  readOnly: true
- name: tmp
  mountPath: /tmp
- name: data
  mountPath: /var/lib/deepwatch
{{- if and .es (include "deepwatch.esCaSecret" .ctx) }}
- name: es-ca
  mountPath: /etc/deepwatch/es-ca
  readOnly: true
{{- end }}
{{- if and .models .ctx.Values.models.existingClaim }}
- name: models
  mountPath: /models
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Crawler and worker serve /healthz on 127.0.0.1 only (ingest/crawler.py, stream/app.py), which the
kubelet cannot reach over the pod IP; the probe therefore runs inside the container. urlopen raises on
a 503, so an unhealthy answer fails the probe as well as no answer.
*/}}
{{- define "deepwatch.healthProbe" -}}
httpGet:
  path: /healthz
  port: {{ .port }}
timeoutSeconds: 5
periodSeconds: {{ .period | default 15 }}
failureThreshold: {{ .failures | default 3 }}
{{- end -}}

{{/* Scrape annotations of a pod serving /metrics on (dict "ctx" $ "port" N) */}}
{{- define "deepwatch.scrapeAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{- define "deepwatch.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- end -}}

{{/* --- NetworkPolicy pieces and Ray pod pieces --- */}}
{{- define "deepwatch.np.dns" -}}
- ports:
    - {port: 53, protocol: UDP}
    - {port: 53, protocol: TCP}
{{- end -}}
{{- define "deepwatch.np.kafka" -}}
{{- if .Values.kafka.enabled }}
- to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "deepwatch.kafkaName" . }}
          strimzi.io/broker-role: "true"
  ports:
    - {port: 9092, protocol: TCP}
{{- end }}
{{- end -}}
{{- define "deepwatch.np.stores" -}}
{{- if .Values.elasticsearch.enabled }}
- to:
    - podSelector:
        matchLabels:
          elasticsearch.k8s.elastic.co/cluster-name: {{ include "deepwatch.esName" . }}
  ports:
    - {port: 9200, protocol: TCP}
{{- end }}
{{- if .Values.minio.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "deepwatch.selectorLabels" (dict "ctx" . "component" "minio") | nindent 10 }}
  ports:
    - {port: 9000, protocol: TCP}
{{- end }}
{{- end -}}
{{- define "deepwatch.np.internet" -}}
{{- $f := .Values.networkPolicy.fetchEgress }}
- to:
    - ipBlock:
        cidr: 0.0.0.0/0
        {{- with $f.exceptCidrs }}
        except:
          {{- toYaml . | nindent 10 }}
        {{- end }}
  ports:
    {{- range $f.ports }}
    - {port: {{ . }}, protocol: TCP}
    {{- end }}
{{- end -}}
{{- define "deepwatch.np.rayPods" -}}
- podSelector:
    matchLabels:
      {{- include "deepwatch.selectorLabels" (dict "ctx" . "component" "ray-head") | nindent 6 }}
- podSelector:
    matchLabels:
      {{- include "deepwatch.selectorLabels" (dict "ctx" . "component" "ray-worker") | nindent 6 }}
{{- end -}}
{{- define "deepwatch.rayPodAnnotations" -}}
{{ include "deepwatch.checksums" .ctx }}
{{- if .ctx.Values.metrics.podAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: "8080"
prometheus.io/path: /metrics
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end -}}
{{- define "deepwatch.rayVolumes" -}}
{{ include "deepwatch.volumes" (dict "ctx" .ctx "es" true "models" true) }}
- name: data
  emptyDir: {}
# Ray's object store is shared memory; the container default of 64 MiB would spill everything to disk.
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .shm }}
{{- end -}}
{{- define "deepwatch.rayMounts" -}}
{{ include "deepwatch.volumeMounts" (dict "ctx" .ctx "es" true "models" true) }}
- name: dshm
  mountPath: /dev/shm
{{- end -}}
