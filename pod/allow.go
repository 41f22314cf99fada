package pod

// Field paths of a pod spec that cocoon supports, as patterns: "[]" stands
// for any list index. A path whose value is set (non-zero) and that is
// neither allowed nor below an allowed leaf is an error naming it; fields in
// ignored are accepted with a warning because they only matter to a cluster
// scheduler.
var containerFields = []string{
	"name", "image", "command", "args", "workingDir",
	"env[].name", "env[].value",
	// Resolved from a Secret of the same manifest, to a sealed secret only.
	"env[].valueFrom.secretKeyRef.name", "env[].valueFrom.secretKeyRef.key",
	"ports", // informational: the pod network is shared loopback
	"resources.limits.cpu", "resources.limits.memory",
	"resources.requests.cpu", "resources.requests.memory",
	"volumeMounts[].name", "volumeMounts[].mountPath", "volumeMounts[].readOnly", "volumeMounts[].subPath",
	"securityContext.runAsUser", "securityContext.runAsGroup", "securityContext.runAsNonRoot",
	"securityContext.readOnlyRootFilesystem", "securityContext.privileged",
	"securityContext.allowPrivilegeEscalation",
	"securityContext.capabilities.add", "securityContext.capabilities.drop",
	"imagePullPolicy", "terminationMessagePath", "terminationMessagePolicy",
	// A stdin the host writes (kubectl attach) and a terminal: pinned in
	// the policy. stdinOnce is kubelet's: it closes stdin after the first
	// attach ends.
	"stdin", "stdinOnce", "tty",
	// The seccomp profile: pinned in the policy by its digest.
	"securityContext.seccompProfile.type", "securityContext.seccompProfile.localhostProfile",
}

func allowedPaths() map[string]bool {
	m := map[string]bool{
		"spec.restartPolicy":                 true,
		"spec.hostname":                      true,
		"spec.terminationGracePeriodSeconds": true,
		// The RuntimeClass that selects cocoon under Kubernetes: it picks
		// the runtime on the node and is not part of the sandbox.
		"spec.runtimeClassName":               true,
		"spec.volumes[].name":                 true,
		"spec.volumes[].emptyDir.medium":      true,
		"spec.volumes[].emptyDir.sizeLimit":   true,
		"spec.volumes[].csi.driver":           true,
		"spec.volumes[].csi.readOnly":         true,
		"spec.volumes[].csi.volumeAttributes": true,
		// A Secret of the manifest whose values are sealed secrets.
		"spec.volumes[].secret.secretName":                     true,
		"spec.volumes[].secret.items[].key":                    true,
		"spec.volumes[].secret.items[].path":                   true,
		"spec.volumes[].secret.items[].mode":                   true,
		"spec.volumes[].secret.defaultMode":                    true,
		"spec.volumes[].secret.optional":                       true,
		"spec.securityContext.runAsUser":                       true,
		"spec.securityContext.runAsGroup":                      true,
		"spec.securityContext.runAsNonRoot":                    true,
		"spec.shareProcessNamespace":                           true,
		"spec.securityContext.supplementalGroups":              true,
		"spec.securityContext.fsGroup":                         true,
		"spec.securityContext.sysctls[].name":                  true,
		"spec.securityContext.sysctls[].value":                 true,
		"spec.securityContext.seccompProfile.type":             true,
		"spec.securityContext.seccompProfile.localhostProfile": true,
	}
	for _, f := range containerFields {
		m["spec.containers[]."+f] = true
		m["spec.initContainers[]."+f] = true
	}
	m["spec.initContainers[].restartPolicy"] = true
	return m
}

var ignoredPaths = map[string]string{
	"spec.nodeSelector":                 "scheduling",
	"spec.affinity":                     "scheduling",
	"spec.tolerations":                  "scheduling",
	"spec.topologySpreadConstraints":    "scheduling",
	"spec.priorityClassName":            "scheduling",
	"spec.priority":                     "scheduling",
	"spec.schedulerName":                "scheduling",
	"spec.nodeName":                     "scheduling",
	"spec.serviceAccountName":           "cluster identity",
	"spec.serviceAccount":               "cluster identity",
	"spec.automountServiceAccountToken": "cluster identity",
	"spec.enableServiceLinks":           "cluster services",
	"spec.dnsPolicy":                    "cluster DNS",
}
