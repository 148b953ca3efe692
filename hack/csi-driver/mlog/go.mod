// A stand-in for monis.app/mlog, the log-setup library the Secrets Store CSI
// driver's main package imports: the Go module proxy does not serve that module,
// so hack/install-csi-driver.sh builds the driver with this replacement. It offers
// only the names the driver uses, on klog (which the driver logs through anyway).
module monis.app/mlog

go 1.22

require k8s.io/klog/v2 v2.120.1
