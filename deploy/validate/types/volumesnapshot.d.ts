// snapshot.storage.k8s.io/v1 VolumeSnapshot (kubernetes-csi/external-snapshotter
// v8 CRD, its spec fields only): no npm model exists for it, and the strict
// check needs every field it may hold.
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";

export interface IVolumeSnapshot {
  "apiVersion": "snapshot.storage.k8s.io/v1";
  "kind": "VolumeSnapshot";
  "metadata"?: IObjectMeta;
  "spec": {
    // Exactly one of the two.
    "source":
      | { "persistentVolumeClaimName": string }
      | { "volumeSnapshotContentName": string };
    "volumeSnapshotClassName"?: string;
  };
}
