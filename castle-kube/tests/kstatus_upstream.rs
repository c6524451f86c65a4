//! cli-utils' own kstatus tests, ported: every case of `pkg/kstatus/status/status_compute_test.go`
//! and `core_test.go` (kubernetes-sigs/cli-utils 5895ad6c17dd06b99c1e5c8af17e2b12a3504fad),
//! its YAML manifests transcribed as they are, run through [`kstatus::compute`]. The
//! manifests are cli-utils' own test data (Apache-2.0), kept unchanged so that a
//! difference from kstatus shows as a failure here.
//!
//! The Go tests assert the status and the reason of the condition kstatus adds
//! (Reconciling when in progress, Stalled when failed, none when current); each case
//! here asserts both exactly, and also the message `core.go`/`generic.go` compose,
//! which the Go tests do not check. Then: what MockCluster's fake controllers write
//! is judged by the same rules as a real cluster's objects.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use castle_kube::kstatus::{self, Computed, Kstatus};
use castle_kube::{ClusterApi, Condition, Error, Latency, MockCluster, ObjectRef};
use serde_json::{Value, json};

/// One Go test case: `(Go test function, case name, manifest, status, reason of the
/// Reconciling/Stalled condition, message)`.
type Case = (
    &'static str,
    &'static str,
    &'static str,
    Kstatus,
    &'static str,
    &'static str,
);

const CASES: &[Case] = &[
    // TestPodStatus "podNoStatus" (manifest `podNoStatus`)
    (
        "TestPodStatus",
        "podNoStatus",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
"#,
        Kstatus::InProgress,
        "PodNotObserved",
        "Pod phase not available",
    ),
    // TestPodStatus "podReady" (manifest `podReady`)
    (
        "TestPodStatus",
        "podReady",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   conditions:
    - type: Ready 
      status: "True"
   phase: Running
"#,
        Kstatus::Current,
        "",
        "Pod is Ready",
    ),
    // TestPodStatus "podCompletedSuccessfully" (manifest `podCompletedOK`)
    (
        "TestPodStatus",
        "podCompletedSuccessfully",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   phase: Succeeded
   conditions:
    - type: Ready 
      status: "False"
      reason: PodCompleted

"#,
        Kstatus::Current,
        "",
        "Pod has completed successfully",
    ),
    // TestPodStatus "podCompletedFailed" (manifest `podCompletedFail`)
    (
        "TestPodStatus",
        "podCompletedFailed",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   phase: Failed
   conditions:
    - type: Ready 
      status: "False"
      reason: PodCompleted
"#,
        Kstatus::Current,
        "",
        "Pod has completed, but not successfully",
    ),
    // TestPodStatus "podUnschedulable" (manifest `podUnschedulable`)
    (
        "TestPodStatus",
        "podUnschedulable",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   phase: Pending
   conditions:
    - type: PodScheduled 
      status: "False"
      reason: Unschedulable
"#,
        Kstatus::Failed,
        "PodUnschedulable",
        "Pod could not be scheduled",
    ),
    // TestPodStatus "podCrashLooping" (manifest `podCrashLooping`)
    (
        "TestPodStatus",
        "podCrashLooping",
        r#"apiVersion: v1
kind: Pod
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   phase: Running
   conditions:
    - type: PodScheduled 
      status: "False"
      reason: Unschedulable
   containerStatuses:
    - name: nginx
      state:
         waiting:
            reason: CrashLoopBackOff
"#,
        Kstatus::Failed,
        "ContainerCrashLooping",
        "Containers in CrashLoop state: nginx",
    ),
    // TestPVCStatus "pvcNoStatus" (manifest `pvcNoStatus`)
    (
        "TestPVCStatus",
        "pvcNoStatus",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
   generation: 1
   name: test
"#,
        Kstatus::InProgress,
        "NotBound",
        "PVC is not Bound. phase: unknown",
    ),
    // TestPVCStatus "pvcBound" (manifest `pvcBound`)
    (
        "TestPVCStatus",
        "pvcBound",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   phase: Bound
"#,
        Kstatus::Current,
        "",
        "PVC is Bound",
    ),
    // TestStsStatus "stsNoStatus" (manifest `stsNoStatus`)
    (
        "TestStsStatus",
        "stsNoStatus",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
"#,
        Kstatus::InProgress,
        "LessReplicas",
        "Replicas: 0/1",
    ),
    // TestStsStatus "stsBadStatus" (manifest `stsBadStatus`)
    (
        "TestStsStatus",
        "stsBadStatus",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   observedGeneration: 1
   currentReplicas: 1
"#,
        Kstatus::InProgress,
        "LessReplicas",
        "Replicas: 0/1",
    ),
    // TestStsStatus "stsOK" (manifest `stsOK`)
    (
        "TestStsStatus",
        "stsOK",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
   namespace: qual
spec:
   replicas: 4
status:
   observedGeneration: 1
   currentReplicas: 4
   readyReplicas: 4
   replicas: 4
"#,
        Kstatus::Current,
        "",
        "All replicas scheduled as expected. Replicas: 4",
    ),
    // TestStsStatus "stsLessReady" (manifest `stsLessReady`)
    (
        "TestStsStatus",
        "stsLessReady",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
   namespace: qual
spec:
   replicas: 4
status:
   observedGeneration: 1
   currentReplicas: 4
   readyReplicas: 2
   replicas: 4
"#,
        Kstatus::InProgress,
        "LessReady",
        "Ready: 2/4",
    ),
    // TestStsStatus "stsLessCurrent" (manifest `stsLessCurrent`)
    (
        "TestStsStatus",
        "stsLessCurrent",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
   namespace: qual
spec:
   replicas: 4
status:
   observedGeneration: 1
   currentReplicas: 2
   readyReplicas: 4
   replicas: 4
"#,
        Kstatus::InProgress,
        "LessCurrent",
        "current: 2/4",
    ),
    // TestStsStatus "stsExtraPods" (manifest `stsExtraPods`)
    (
        "TestStsStatus",
        "stsExtraPods",
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
   generation: 1
   name: test
   namespace: qual
spec:
   replicas: 4
status:
   observedGeneration: 1
   currentReplicas: 4
   readyReplicas: 4
   replicas: 8
"#,
        Kstatus::InProgress,
        "ExtraPods",
        "Pending termination: 4",
    ),
    // TestDaemonsetStatus "dsNoStatus" (manifest `dsNoStatus`)
    (
        "TestDaemonsetStatus",
        "dsNoStatus",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   generation: 1
"#,
        Kstatus::InProgress,
        "NoObservedGeneration",
        "DaemonSet status.observedGeneration not found",
    ),
    // TestDaemonsetStatus "dsBadStatus" (manifest `dsBadStatus`)
    (
        "TestDaemonsetStatus",
        "dsBadStatus",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   observedGeneration: 1
   currentReplicas: 1
"#,
        Kstatus::InProgress,
        "NoDesiredNumber",
        "Missing .status.desiredNumberScheduled",
    ),
    // TestDaemonsetStatus "dsOK" (manifest `dsOK`)
    (
        "TestDaemonsetStatus",
        "dsOK",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   desiredNumberScheduled: 4
   currentNumberScheduled: 4
   updatedNumberScheduled: 4
   numberAvailable: 4
   numberReady: 4
   observedGeneration: 1
"#,
        Kstatus::Current,
        "",
        "All replicas scheduled as expected. Replicas: 4",
    ),
    // TestDaemonsetStatus "dsLessReady" (manifest `dsLessReady`)
    (
        "TestDaemonsetStatus",
        "dsLessReady",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   observedGeneration: 1
   desiredNumberScheduled: 4
   currentNumberScheduled: 4
   updatedNumberScheduled: 4
   numberAvailable: 4
   numberReady: 2
"#,
        Kstatus::InProgress,
        "LessReady",
        "Ready: 2/4",
    ),
    // TestDaemonsetStatus "dsDifferentGeneration" (manifest `dsDifferentGeneration`)
    (
        "TestDaemonsetStatus",
        "dsDifferentGeneration",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   namespace: qual
   generation: 2
status:
   desiredNumberScheduled: 4
   currentNumberScheduled: 4
   updatedNumberScheduled: 4
   numberAvailable: 4
   numberReady: 4
   observedGeneration: 1
"#,
        Kstatus::InProgress,
        "LatestGenerationNotObserved",
        "DaemonSet generation is 2, but latest observed generation is 1",
    ),
    // TestDaemonsetStatus "dsLessAvailable" (manifest `dsLessAvailable`)
    (
        "TestDaemonsetStatus",
        "dsLessAvailable",
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   observedGeneration: 1
   desiredNumberScheduled: 4
   currentNumberScheduled: 4
   updatedNumberScheduled: 4
   numberAvailable: 2
   numberReady: 4
"#,
        Kstatus::InProgress,
        "LessAvailable",
        "Available: 2/4",
    ),
    // TestDeploymentStatus "depNoStatus" (manifest `depNoStatus`)
    (
        "TestDeploymentStatus",
        "depNoStatus",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
"#,
        Kstatus::InProgress,
        "LessReplicas",
        "Replicas: 0/1",
    ),
    // TestDeploymentStatus "depOK" (manifest `depOK`)
    (
        "TestDeploymentStatus",
        "depOK",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
   namespace: qual
status:
   observedGeneration: 1
   updatedReplicas: 1
   readyReplicas: 1
   availableReplicas: 1
   replicas: 1
   conditions:
    - type: Progressing 
      status: "True"
      reason: NewReplicaSetAvailable
    - type: Available 
      status: "True"
"#,
        Kstatus::Current,
        "",
        "Deployment is available. Replicas: 1",
    ),
    // TestDeploymentStatus "depNotProgressing" (manifest `depNotProgressing`)
    (
        "TestDeploymentStatus",
        "depNotProgressing",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
   namespace: qual
spec:
   progressDeadlineSeconds: 45
status:
   observedGeneration: 1
   updatedReplicas: 1
   readyReplicas: 1
   availableReplicas: 1
   replicas: 1
   observedGeneration: 1
   conditions:
    - type: Progressing 
      status: "False"
      reason: Some reason
    - type: Available 
      status: "True"
"#,
        Kstatus::InProgress,
        "ReplicaSetNotAvailable",
        "ReplicaSet not Available",
    ),
    // TestDeploymentStatus "depNoProgressDeadlineSeconds" (manifest `depNoProgressDeadlineSeconds`)
    (
        "TestDeploymentStatus",
        "depNoProgressDeadlineSeconds",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
   namespace: qual
status:
   observedGeneration: 1
   updatedReplicas: 1
   readyReplicas: 1
   availableReplicas: 1
   replicas: 1
   observedGeneration: 1
   conditions:
    - type: Available
      status: "True"
"#,
        Kstatus::Current,
        "",
        "Deployment is available. Replicas: 1",
    ),
    // TestDeploymentStatus "depNotAvailable" (manifest `depNotAvailable`)
    (
        "TestDeploymentStatus",
        "depNotAvailable",
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
   namespace: qual
status:
   observedGeneration: 1
   updatedReplicas: 1
   readyReplicas: 1
   availableReplicas: 1
   replicas: 1
   observedGeneration: 1
   conditions:
    - type: Progressing 
      status: "True"
      reason: NewReplicaSetAvailable
    - type: Available 
      status: "False"
"#,
        Kstatus::InProgress,
        "DeploymentNotAvailable",
        "Deployment not Available",
    ),
    // TestReplicasetStatus "rsNoStatus" (manifest `rsNoStatus`)
    (
        "TestReplicasetStatus",
        "rsNoStatus",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   generation: 1
"#,
        Kstatus::InProgress,
        "LessLabelled",
        "Labelled: 0/1",
    ),
    // TestReplicasetStatus "rsOK1" (manifest `rsOK1`)
    (
        "TestReplicasetStatus",
        "rsOK1",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   replicas: 2
status:
   observedGeneration: 1
   replicas: 2
   readyReplicas: 2
   availableReplicas: 2
   fullyLabeledReplicas: 2
   conditions:
    - type: ReplicaFailure 
      status: "False"
"#,
        Kstatus::Current,
        "",
        "ReplicaSet is available. Replicas: 2",
    ),
    // TestReplicasetStatus "rsOK2" (manifest `rsOK2`)
    (
        "TestReplicasetStatus",
        "rsOK2",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   replicas: 2
status:
   observedGeneration: 1
   fullyLabeledReplicas: 2
   replicas: 2
   readyReplicas: 2
   availableReplicas: 2
"#,
        Kstatus::Current,
        "",
        "ReplicaSet is available. Replicas: 2",
    ),
    // TestReplicasetStatus "rsLessAvailable" (manifest `rsLessAvailable`)
    (
        "TestReplicasetStatus",
        "rsLessAvailable",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   replicas: 4
status:
   observedGeneration: 1
   replicas: 4
   readyReplicas: 4
   availableReplicas: 2
   fullyLabeledReplicas: 4
"#,
        Kstatus::InProgress,
        "LessAvailable",
        "Available: 2/4",
    ),
    // TestReplicasetStatus "rsLessReady" (manifest `rsLessReady`)
    (
        "TestReplicasetStatus",
        "rsLessReady",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   replicas: 4
status:
   observedGeneration: 1
   replicas: 4
   readyReplicas: 2
   availableReplicas: 4
   fullyLabeledReplicas: 4
"#,
        Kstatus::InProgress,
        "LessReady",
        "Ready: 2/4",
    ),
    // TestReplicasetStatus "rsReplicaFailure" (manifest `rsReplicaFailure`)
    (
        "TestReplicasetStatus",
        "rsReplicaFailure",
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   replicas: 4
status:
   observedGeneration: 1
   replicas: 4
   readyReplicas: 4
   fullyLabeledReplicas: 4
   availableReplicas: 4
   conditions:
    - type: ReplicaFailure 
      status: "True"
"#,
        Kstatus::InProgress,
        "ReplicaFailure",
        "Replica Failure condition. Check Pods",
    ),
    // TestPDBStatus "pdbNotObserved" (manifest `pdbNotObserved`)
    (
        "TestPDBStatus",
        "pdbNotObserved",
        r#"apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata:
   generation: 2
   name: test
   namespace: qual
status:
   observedGeneration: 1
"#,
        Kstatus::InProgress,
        "LatestGenerationNotObserved",
        "PodDisruptionBudget generation is 2, but latest observed generation is 1",
    ),
    // TestPDBStatus "pdbObserved" (manifest `pdbObserved`)
    (
        "TestPDBStatus",
        "pdbObserved",
        r#"apiVersion: policy/v1beta1
kind: PodDisruptionBudget
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   observedGeneration: 1
"#,
        Kstatus::Current,
        "",
        "AllowedDisruptions has been computed.",
    ),
    // TestCRDGenericStatus "crdNoStatus" (manifest `crdNoStatus`)
    (
        "TestCRDGenericStatus",
        "crdNoStatus",
        r#"apiVersion: something/v1
kind: MyCR
metadata:
   generation: 1
   name: test
   namespace: qual
"#,
        Kstatus::Current,
        "",
        "Resource is current",
    ),
    // TestCRDGenericStatus "crdReady" (manifest `crdReady`)
    (
        "TestCRDGenericStatus",
        "crdReady",
        r#"apiVersion: something/v1
kind: MyCR
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   conditions:
    - type: Ready 
      status: "True"
      message: All looks ok
      reason: AllOk
"#,
        Kstatus::Current,
        "",
        "Resource is Ready",
    ),
    // TestCRDGenericStatus "crdNotReady" (manifest `crdNotReady`)
    (
        "TestCRDGenericStatus",
        "crdNotReady",
        r#"apiVersion: something/v1
kind: MyCR
metadata:
   generation: 1
   name: test
   namespace: qual
status:
   observedGeneration: 1
   conditions:
    - type: Ready 
      status: "False"
      reason: NotReadyYet
"#,
        Kstatus::InProgress,
        "NotReadyYet",
        "",
    ),
    // TestCRDGenericStatus "crdNoCondition" (manifest `crdNoCondition`)
    (
        "TestCRDGenericStatus",
        "crdNoCondition",
        r#"apiVersion: something/v1
kind: MyCR
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   conditions:
    - type: SomeCondition 
      status: "False"
"#,
        Kstatus::Current,
        "",
        "Resource is current",
    ),
    // TestCRDGenericStatus "crdMismatchStatusGeneration" (manifest `crdMismatchStatusGeneration`)
    (
        "TestCRDGenericStatus",
        "crdMismatchStatusGeneration",
        r#"apiVersion: something/v1
kind: MyCR
metadata:
   name: test
   namespace: qual
   generation: 2
status:
   observedGeneration: 1
"#,
        Kstatus::InProgress,
        "LatestGenerationNotObserved",
        "MyCR generation is 2, but latest observed generation is 1",
    ),
    // TestJobStatus "jobNoStatus" (manifest `jobNoStatus`)
    (
        "TestJobStatus",
        "jobNoStatus",
        r#"apiVersion: batch/v1
kind: Job
metadata:
   name: test
   namespace: qual
   generation: 1
"#,
        Kstatus::InProgress,
        "JobNotStarted",
        "Job not started",
    ),
    // TestJobStatus "jobComplete" (manifest `jobComplete`)
    (
        "TestJobStatus",
        "jobComplete",
        r#"apiVersion: batch/v1
kind: Job
metadata:
   name: test
   namespace: qual
   generation: 1
status:
   succeeded: 1
   active: 0
   conditions:
    - type: Complete 
      status: "True"
"#,
        Kstatus::Current,
        "",
        "Job Completed. succeeded: 1/1",
    ),
    // TestJobStatus "jobFailed" (manifest `jobFailed`)
    (
        "TestJobStatus",
        "jobFailed",
        r#"apiVersion: batch/v1
kind: Job
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   completions: 4
status:
   succeeded: 3
   failed: 1
   conditions:
    - type: Failed 
      status: "True"
      reason: JobFailed
"#,
        Kstatus::Failed,
        "JobFailed",
        "Job Failed. failed: 1/4",
    ),
    // TestJobStatus "jobInProgress" (manifest `jobInProgress`)
    (
        "TestJobStatus",
        "jobInProgress",
        r#"apiVersion: batch/v1
kind: Job
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
   completions: 10
   parallelism: 2
status:
   startTime: "2019-06-04T01:17:13Z"
   succeeded: 3
   failed: 1
   active: 2
   conditions:
    - type: Failed 
      status: "False"
    - type: Complete 
      status: "False"
"#,
        Kstatus::Current,
        "",
        "Job in progress. success:3, active: 2, failed: 1",
    ),
    // TestCronJobStatus "cronjobNoStatus" (manifest `cronjobNoStatus`)
    (
        "TestCronJobStatus",
        "cronjobNoStatus",
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
   name: test
   namespace: qual
   generation: 1
"#,
        Kstatus::Current,
        "",
        "Resource is always ready",
    ),
    // TestCronJobStatus "cronjobWithStatus" (manifest `cronjobWithStatus`)
    (
        "TestCronJobStatus",
        "cronjobWithStatus",
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
   name: test
   namespace: qual
   generation: 1
status:
"#,
        Kstatus::Current,
        "",
        "Resource is always ready",
    ),
    // TestServiceStatus "serviceDefault" (manifest `serviceDefault`)
    (
        "TestServiceStatus",
        "serviceDefault",
        r#"apiVersion: v1
kind: Service
metadata:
   name: test
   namespace: qual
   generation: 1
"#,
        Kstatus::Current,
        "",
        "Service is ready",
    ),
    // TestServiceStatus "serviceNodePort" (manifest `serviceNodePort`)
    (
        "TestServiceStatus",
        "serviceNodePort",
        r#"apiVersion: v1
kind: Service
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
  type: NodePort
"#,
        Kstatus::Current,
        "",
        "Service is ready",
    ),
    // TestServiceStatus "serviceLBnok" (manifest `serviceLBnok`)
    (
        "TestServiceStatus",
        "serviceLBnok",
        r#"apiVersion: v1
kind: Service
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
  type: LoadBalancer
"#,
        Kstatus::InProgress,
        "NoIPAssigned",
        "ClusterIP not set. Service type: LoadBalancer",
    ),
    // TestServiceStatus "serviceLBok" (manifest `serviceLBok`)
    (
        "TestServiceStatus",
        "serviceLBok",
        r#"apiVersion: v1
kind: Service
metadata:
   name: test
   namespace: qual
   generation: 1
spec:
  type: LoadBalancer
  clusterIP: "1.2.3.4"
"#,
        Kstatus::Current,
        "",
        "Service is ready",
    ),
    // TestCRDStatus "crdNoConditions" (manifest `crdNoConditions`)
    (
        "TestCRDStatus",
        "crdNoConditions",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
   generation: 1
"#,
        Kstatus::InProgress,
        "Installing",
        "Install in progress",
    ),
    // TestCRDStatus "crdInstalling" (manifest `crdInstalling`)
    (
        "TestCRDStatus",
        "crdInstalling",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
   generation: 1
status:
   conditions:
    - type: NamesAccepted
      status: "True"
      reason: NoConflicts
    - type: Established
      status: "False"
      reason: Installing
"#,
        Kstatus::InProgress,
        "Installing",
        "Install in progress",
    ),
    // TestCRDStatus "crdNamesNotAccepted" (manifest `crdNamesNotAccepted`)
    (
        "TestCRDStatus",
        "crdNamesNotAccepted",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
   generation: 1
status:
   conditions:
    - type: NamesAccepted
      status: "False"
      reason: SomeReason
"#,
        Kstatus::Failed,
        "SomeReason",
        "",
    ),
    // TestCRDStatus "crdEstablished" (manifest `crdEstablished`)
    (
        "TestCRDStatus",
        "crdEstablished",
        r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
   generation: 1
status:
   conditions:
    - type: NamesAccepted
      status: "True"
      reason: NoConflicts
    - type: Established
      status: "True"
      reason: InitialNamesAccepted
"#,
        Kstatus::Current,
        "",
        "CRD is established",
    ),
];

/// `status_compute_test.go` TestPodStatus "podBeingScheduled": the manifest takes
/// the creation time, formatted from `time.Now()`.
const POD_BEING_SCHEDULED: &str = r#"apiVersion: v1
kind: Pod
metadata:
   creationTimestamp: %s
   generation: 1
   name: test
   namespace: qual
status:
   phase: Pending
   conditions:
    - type: PodScheduled 
      status: "False"
      reason: Unschedulable
"#;

/// `core_test.go`: TestSuspendedJobConditions, TestPreviouslySuspendedJobConditions
/// and TestSuspendedJobTransitionConditions (`%t` and `%s` filled as the Go test fills
/// them). These Go tests assert the status only.
const JOB_SUSPENDED: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
   name: test
   generation: 1
   namespace: qual
spec:
  suspend: %t
status:
  conditions:
  - type: Suspended
    status: "%s"
"#;

/// Go cases whose result Castle does not match, with the reason. None: every case
/// above is matched. A case listed here is asserted to still differ, so that a
/// fix shows up as a failing test to move it back.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The manifest as sigs.k8s.io/yaml reads it into an Unstructured: a repeated key
/// (`observedGeneration` twice in depNotProgressing and two more) keeps the last
/// value, as go-yaml v2 does.
fn yaml(text: &str) -> Value {
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    serde_saphyr::from_str_with_options(text, options).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn check(test: &str, name: &str, manifest: &str, status: Kstatus, reason: &str, message: &str) {
    let got = kstatus::compute(&yaml(manifest));
    let want = (status, reason, message);
    let seen = (got.status, got.reason.as_str(), got.message.as_str());
    let differs = KNOWN_DIFFERENCES.iter().any(|(n, _)| *n == name);
    if differs {
        assert_ne!(
            seen, want,
            "{test} {name} now matches: remove it from KNOWN_DIFFERENCES"
        );
    } else {
        assert_eq!(seen, want, "{test} {name}");
    }
}

#[test]
fn every_status_compute_case_of_cli_utils_holds() {
    for (test, name, manifest, status, reason, message) in CASES {
        check(test, name, manifest, *status, reason, message);
    }
    assert_eq!(CASES.len(), 52);
}

#[test]
fn a_pod_unschedulable_for_less_than_fifteen_seconds_is_being_scheduled() {
    let manifest = POD_BEING_SCHEDULED.replace("%s", &rfc3339(std::time::SystemTime::now()));
    check(
        "TestPodStatus",
        "podBeingScheduled",
        &manifest,
        Kstatus::InProgress,
        "PodNotScheduled",
        "Pod has not been scheduled",
    );
}

#[test]
fn a_suspended_job_is_current_and_one_changing_state_is_in_progress() {
    let job = |suspend: bool, status: &str| {
        JOB_SUSPENDED
            .replace("%t", &suspend.to_string())
            .replace("%s", status)
    };
    for (test, manifest, want) in [
        (
            "TestSuspendedJobConditions",
            job(true, "True"),
            Kstatus::Current,
        ),
        (
            "TestPreviouslySuspendedJobConditions",
            job(false, "False"),
            Kstatus::InProgress,
        ),
        (
            "TestSuspendedJobTransitionConditions (to)",
            job(true, "False"),
            Kstatus::InProgress,
        ),
        (
            "TestSuspendedJobTransitionConditions (from)",
            job(false, "True"),
            Kstatus::InProgress,
        ),
    ] {
        assert_eq!(kstatus::compute(&yaml(&manifest)).status, want, "{test}");
    }
}

/// kstatus's Failed for a Deployment keeps the controller's words in its Stalled
/// condition (`core.go`, deploymentConditions).
#[test]
fn a_deployment_past_its_progress_deadline_is_failed() {
    let manifest = r#"apiVersion: apps/v1
kind: Deployment
metadata:
   name: test
   generation: 1
   namespace: qual
status:
   observedGeneration: 1
   replicas: 1
   updatedReplicas: 1
   conditions:
    - type: Progressing
      status: "False"
      reason: ProgressDeadlineExceeded
      message: ReplicaSet "test-5d4f8c7b9" has timed out progressing.
"#;
    let got = kstatus::compute(&yaml(manifest));
    assert_eq!(
        got,
        Computed {
            status: Kstatus::Failed,
            message: "Progress deadline exceeded".into(),
            reason: "ProgressDeadlineExceeded".into(),
            detail: "ReplicaSet \"test-5d4f8c7b9\" has timed out progressing.".into(),
        }
    );
}

/// `2026-12-02T06:55:56Z`, as Go's `time.RFC3339` writes a UTC time.
fn rfc3339(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

const T: Duration = Duration::from_secs(600);

fn lab() -> MockCluster {
    let c = MockCluster::new().with_latency(Latency::lab());
    c.add_node("cp-1");
    c.add_node("worker-1");
    c
}

fn workload(kind: &str, name: &str, image: &str) -> Value {
    let labels = json!({"app": name});
    json!({"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": name, "image": image}]}}}})
}

async fn computed(c: &MockCluster, r: &ObjectRef) -> (Computed, Value) {
    let v = c.get(r).await.unwrap().unwrap();
    (kstatus::compute(&v), v)
}

/// What MockCluster's controllers write, judged by kstatus as a real cluster's
/// objects are: in progress while the pods start, Current once rolled out, with the
/// fields and conditions the deployment, StatefulSet and DaemonSet controllers set.
#[tokio::test(start_paused = true)]
async fn workloads_the_mock_rolls_out_are_current_by_kstatus() {
    let c = lab();
    c.apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}),
        false,
    )
    .await
    .unwrap();
    for kind in ["Deployment", "StatefulSet", "DaemonSet"] {
        let w = workload(kind, "blog", "ghcr.io/lab/blog:1");
        c.apply(&w, false).await.unwrap();
        let r = ObjectRef::of(&w);
        let (rolling, v) = computed(&c, &r).await;
        assert_eq!(rolling.status, Kstatus::InProgress, "{kind}: {v}");
        let (want, message) = match kind {
            "Deployment" => (
                ("LessAvailable", "Available: 0/2"),
                "Deployment is available. Replicas: 2",
            ),
            "StatefulSet" => (
                ("LessReady", "Ready: 0/2"),
                "All replicas scheduled as expected. Replicas: 2",
            ),
            _ => (
                ("LessAvailable", "Available: 0/2"),
                "All replicas scheduled as expected. Replicas: 2",
            ),
        };
        assert_eq!(
            (rolling.reason.as_str(), rolling.message.as_str()),
            want,
            "{kind}"
        );
        let detail = c.wait(&Condition::Rollout(r.clone()), T).await.unwrap();
        assert_eq!(detail, message, "{kind}");
        let (done, v) = computed(&c, &r).await;
        assert_eq!(done.status, Kstatus::Current, "{kind}: {v}");
        let s = &v["status"];
        assert_eq!(s["observedGeneration"], v["metadata"]["generation"], "{v}");
        match kind {
            "Deployment" => {
                for f in [
                    "replicas",
                    "updatedReplicas",
                    "readyReplicas",
                    "availableReplicas",
                ] {
                    assert_eq!(s[f], 2, "{f}: {v}");
                }
                let conditions = s["conditions"].as_array().unwrap();
                let reason = |t: &str| {
                    conditions
                        .iter()
                        .find(|c| c["type"] == t)
                        .map(|c| (c["status"].clone(), c["reason"].clone()))
                };
                assert_eq!(
                    reason("Available"),
                    Some((json!("True"), json!("MinimumReplicasAvailable")))
                );
                assert_eq!(
                    reason("Progressing"),
                    Some((json!("True"), json!("NewReplicaSetAvailable")))
                );
            }
            "StatefulSet" => {
                for f in [
                    "replicas",
                    "currentReplicas",
                    "updatedReplicas",
                    "readyReplicas",
                ] {
                    assert_eq!(s[f], 2, "{f}: {v}");
                }
                assert_eq!(s["currentRevision"], s["updateRevision"], "{v}");
            }
            _ => {
                for f in [
                    "desiredNumberScheduled",
                    "currentNumberScheduled",
                    "updatedNumberScheduled",
                    "numberAvailable",
                    "numberReady",
                ] {
                    assert_eq!(s[f], 2, "{f}: {v}");
                }
            }
        }
    }
    // A new template: the StatefulSet's current revision stays the old one until
    // every pod is updated and Ready.
    let sts = ObjectRef::new("apps/v1", "StatefulSet", Some("web"), "blog");
    let (_, before) = computed(&c, &sts).await;
    c.apply(
        &workload("StatefulSet", "blog", "ghcr.io/lab/blog:2"),
        false,
    )
    .await
    .unwrap();
    let (rolling, v) = computed(&c, &sts).await;
    assert_eq!(rolling.status, Kstatus::InProgress, "{v}");
    assert_eq!(
        v["status"]["currentRevision"],
        before["status"]["updateRevision"]
    );
    assert_ne!(
        v["status"]["currentRevision"],
        v["status"]["updateRevision"]
    );
    c.wait(&Condition::Rollout(sts.clone()), T).await.unwrap();
    let (_, v) = computed(&c, &sts).await;
    assert_eq!(
        v["status"]["currentRevision"],
        v["status"]["updateRevision"]
    );
}

/// A Deployment whose pods crash-loop (CoreDNS resolving through itself, the mock's
/// modelled crash, `crash_loop.rs`) gets Progressing=False ProgressDeadlineExceeded
/// after its own `progressDeadlineSeconds`, as the deployment controller writes it;
/// kstatus calls that Failed, and the wait ends with an error naming the Deployment
/// instead of running out.
#[tokio::test(start_paused = true)]
async fn a_deployment_past_its_progress_deadline_fails_the_wait() {
    let c = lab();
    let corefile = ".:53 {\n    forward . /etc/resolv.conf\n    loop\n}\n";
    c.apply(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"}, "data": {"Corefile": corefile}}), false)
        .await
        .unwrap();
    let labels = json!({"k8s-app": "kube-dns"});
    let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns", "namespace": "kube-system"},
        "spec": {"replicas": 1, "progressDeadlineSeconds": 120, "selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}, "spec": {
            "containers": [{"name": "coredns", "image": "registry.k8s.io/coredns/coredns:v1.14.2", "args": ["-conf", "/etc/coredns/Corefile"],
                "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/coredns"}]}],
            "volumes": [{"name": "config-volume", "configMap": {"name": "coredns"}}]}}}});
    c.apply(&deployment, false).await.unwrap();
    let target = ObjectRef::of(&deployment);
    let started = tokio::time::Instant::now();
    let e = c
        .wait(
            &Condition::Rollout(target.clone()),
            Duration::from_secs(3600),
        )
        .await
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(120) && waited < Duration::from_secs(130),
        "{waited:?}"
    );
    let Error::Failed { object, message } = &e else {
        panic!("{e}");
    };
    assert_eq!(object, "Deployment kube-system/coredns");
    assert!(
        message.starts_with("Progress deadline exceeded: ReplicaSet \"coredns-")
            && message.ends_with("\" has timed out progressing."),
        "{message}"
    );
    let (got, v) = computed(&c, &target).await;
    assert_eq!(
        (got.status, got.reason.as_str()),
        (Kstatus::Failed, "ProgressDeadlineExceeded"),
        "{v}"
    );
}
