{{- /* One operator Deployment: the main one (shard "") or a shard's. */}}
{{- define "s3connect.deployment" -}}
{{- $root := .root }}
{{- $shard := .shard }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "s3connect.fullname" $root }}{{ if $shard }}-shard-{{ $shard }}{{ end }}
  namespace: {{ $root.Release.Namespace }}
  labels: {{- include "s3connect.labels" $root | nindent 4 }}
spec:
  replicas: {{ $root.Values.replicaCount }}
  selector:
    matchLabels:
      {{- include "s3connect.selectorLabels" $root | nindent 6 }}
      {{- if $shard }}
      s3connect.io/shard: {{ $shard }}
      {{- end }}
  template:
    metadata:
      labels:
        {{- include "s3connect.selectorLabels" $root | nindent 8 }}
        {{- if $shard }}
        s3connect.io/shard: {{ $shard }}
        {{- end }}
      {{- with $root.Values.podAnnotations }}
      annotations: {{- toYaml . | nindent 8 }}
      {{- end }}
    spec:
      serviceAccountName: {{ include "s3connect.serviceAccountName" $root }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      securityContext: {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: operator
          image: "{{ $root.Values.image.repository }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [operator, --leader-election]
          env:
            - name: POD_NAME
              valueFrom: {fieldRef: {fieldPath: metadata.name}}
            - name: POD_NAMESPACE
              valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
            - name: S3CONNECT_ALLOWED_ENDPOINTS
              value: {{ join "," $root.Values.allowedEndpoints | quote }}
            - name: S3CONNECT_PLATFORM_URL
              value: {{ $root.Values.platformUrl | quote }}
            - name: S3CONNECT_LOG_FORMAT
              value: {{ $root.Values.logFormat | quote }}
            - name: S3CONNECT_CONCURRENCY
              value: {{ $root.Values.concurrency | quote }}
            - name: S3CONNECT_PLATFORM_CALLS_PER_MINUTE
              value: {{ $root.Values.platformCallsPerMinute | quote }}
            - name: S3CONNECT_VALIDATION_TIMEOUT
              value: {{ $root.Values.validationTimeoutSeconds | quote }}
            - name: S3CONNECT_TRANSIENT_GRACE
              value: {{ $root.Values.transientGraceSeconds | quote }}
            - name: S3CONNECT_SECRET_GRACE
              value: {{ $root.Values.secretGraceSeconds | quote }}
            - name: S3CONNECT_LEASE_DURATION
              value: {{ $root.Values.leaseDuration | quote }}
            - name: S3CONNECT_METRICS_ADDR
              value: "0.0.0.0:{{ $root.Values.metrics.port }}"
            - name: S3CONNECT_HEALTH_ADDR
              value: "0.0.0.0:{{ $root.Values.healthPort }}"
            - name: S3CONNECT_PER_OBJECT_METRICS
              value: {{ $root.Values.metrics.perObject | quote }}
            {{- if $shard }}
            # This shard serves the objects labelled for it; the main Deployment does the
            # installation's cluster-wide work.
            - name: S3CONNECT_WATCH_LABEL_SELECTOR
              value: "s3connect.io/shard={{ $shard }}"
            - name: S3CONNECT_CLUSTER_WIDE
              value: "false"
            - name: S3CONNECT_LEASE_NAME
              value: "{{ include "s3connect.fullname" $root }}-shard-{{ $shard }}"
            {{- else if $root.Values.shards }}
            - name: S3CONNECT_WATCH_LABEL_SELECTOR
              value: "!s3connect.io/shard"
            # The Lease it had before there were shards, so that adding them moves no leader.
            - name: S3CONNECT_LEASE_NAME
              value: "s3connect-leader"
            {{- end }}
            - name: S3CONNECT_INSTALLATION
              value: {{ include "s3connect.fullname" $root | quote }}
            {{- with $root.Values.managedCredentials }}
            {{- if .buckets }}
            {{- fail "managedCredentials.buckets was removed: set managedCredentials.enabled=true and grant buckets per namespace with S3AccessGrants (managedCredentials.grants). See docs/managed-credentials.md, section Upgrading from --managed-buckets." }}
            {{- end }}
            {{- if .enabled }}
            {{- if not .permissionsBoundary }}
            {{- fail "managedCredentials.permissionsBoundary is required with managedCredentials.enabled: every IAM user the operator makes is created under it, so that the operator's own IAM policy (which may create users and put their policies) can never mint an account admin. Create a boundary policy that allows at most S3 on your labelling buckets, and set its ARN." }}
            {{- end }}
            - name: S3CONNECT_MANAGED_CREDENTIALS
              value: "true"
            - name: S3CONNECT_MANAGED_IAM_PATH
              value: {{ .iamPath | quote }}
            - name: S3CONNECT_MIN_ROTATION_INTERVAL
              value: {{ .minRotationIntervalSeconds | quote }}
            - name: S3CONNECT_MAX_MANAGED_PER_NAMESPACE
              value: {{ .maxPerNamespace | quote }}
            {{- if .permissionsBoundary }}
            - name: S3CONNECT_MANAGED_PERMISSIONS_BOUNDARY
              value: {{ .permissionsBoundary | quote }}
            {{- end }}
            {{- end }}
            {{- end }}
            {{- with $root.Values.proxy }}
            {{- if .httpsProxy }}
            - name: HTTPS_PROXY
              value: {{ .httpsProxy | quote }}
            {{- end }}
            {{- if .httpProxy }}
            - name: HTTP_PROXY
              value: {{ .httpProxy | quote }}
            {{- end }}
            {{- if and .noProxy (or .httpsProxy .httpProxy) }}
            - name: NO_PROXY
              value: {{ .noProxy | quote }}
            {{- end }}
            {{- end }}
            {{- $ca := $root.Values.caBundle }}
            {{- if or $ca.configMap $ca.secret }}
            - name: S3CONNECT_CA_BUNDLE
              value: /etc/s3connect/ca/{{ $ca.key }}
            {{- end }}
            {{- if $root.Values.watchNamespace }}
            - name: S3CONNECT_NAMESPACE
              value: {{ $root.Values.watchNamespace | quote }}
            {{- end }}
            {{- with $root.Values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.metrics.port }}
            - name: health
              containerPort: {{ $root.Values.healthPort }}
          # The probes' own port: whatever crowds the metrics port cannot fail them.
          livenessProbe:
            httpGet: {path: /healthz, port: health}
          readinessProbe:
            httpGet: {path: /readyz, port: health}
          resources: {{- toYaml $root.Values.resources | nindent 12 }}
          securityContext: {{- toYaml $root.Values.securityContext | nindent 12 }}
          {{- if or $root.Values.extraVolumeMounts $root.Values.caBundle.configMap $root.Values.caBundle.secret }}
          volumeMounts:
            {{- if or $root.Values.caBundle.configMap $root.Values.caBundle.secret }}
            - {name: ca-bundle, mountPath: /etc/s3connect/ca, readOnly: true}
            {{- end }}
            {{- with $root.Values.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
      terminationGracePeriodSeconds: 30
      {{- with $root.Values.nodeSelector }}
      nodeSelector: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.tolerations }}
      tolerations: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.affinity }}
      affinity: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $root.Values.topologySpreadConstraints }}
      topologySpreadConstraints: {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- if or $root.Values.extraVolumes $root.Values.caBundle.configMap $root.Values.caBundle.secret }}
      volumes:
        {{- with $root.Values.caBundle.configMap }}
        - {name: ca-bundle, configMap: {name: {{ . | quote }}}}
        {{- end }}
        {{- with $root.Values.caBundle.secret }}
        - {name: ca-bundle, secret: {secretName: {{ . | quote }}}}
        {{- end }}
        {{- with $root.Values.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
{{- end }}
