// Package telemetrytest reads what concord's instruments recorded, with the
// OpenTelemetry SDK's manual reader, for tests (it is imported only by
// tests and the demo).
package telemetrytest

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Reader is a meter provider with a manual reader.
type Reader struct {
	Provider *sdkmetric.MeterProvider
	reader   *sdkmetric.ManualReader
}

// New returns a Reader whose provider is shut down when t ends.
func New(t testing.TB) *Reader {
	r := NewReader()
	t.Cleanup(func() { _ = r.Provider.Shutdown(context.Background()) })
	return r
}

// NewReader returns a Reader; the caller shuts its provider down.
func NewReader() *Reader {
	rd := sdkmetric.NewManualReader()
	return &Reader{Provider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(rd)), reader: rd}
}

// Collect reads every instrument now.
func (r *Reader) Collect() metricdata.ResourceMetrics {
	var rm metricdata.ResourceMetrics
	_ = r.reader.Collect(context.Background(), &rm)
	return rm
}

// Point is one data point's value: a sum or gauge's value, or a histogram's
// count and sum.
type Point struct {
	Value float64 // sum or gauge value; histogram sum
	Count uint64  // histogram count
	Found bool
}

// Get returns the value of metric name at the data points whose attributes
// include every one of attrs (key, value pairs), added up.
func (r *Reader) Get(name string, attrs ...string) Point {
	return Find(r.Collect(), name, attrs...)
}

// Find is Get on collected data.
func Find(rm metricdata.ResourceMetrics, name string, attrs ...string) Point {
	var p Point
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += float64(dp.Value)
						p.Found = true
					}
				}
			case metricdata.Sum[float64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += dp.Value
						p.Found = true
					}
				}
			case metricdata.Gauge[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += float64(dp.Value)
						p.Found = true
					}
				}
			case metricdata.Gauge[float64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += dp.Value
						p.Found = true
					}
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += dp.Sum
						p.Count += dp.Count
						p.Found = true
					}
				}
			case metricdata.Histogram[int64]:
				for _, dp := range d.DataPoints {
					if match(dp.Attributes, attrs) {
						p.Value += float64(dp.Sum)
						p.Count += dp.Count
						p.Found = true
					}
				}
			}
		}
	}
	return p
}

func match(set attribute.Set, attrs []string) bool {
	for i := 0; i+1 < len(attrs); i += 2 {
		v, ok := set.Value(attribute.Key(attrs[i]))
		if !ok || v.Emit() != attrs[i+1] {
			return false
		}
	}
	return true
}

// WithAttr returns the names of the metrics that have a data point carrying
// attribute key.
func WithAttr(rm metricdata.ResourceMetrics, key string) []string {
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, set := range attrSets(m.Data) {
				if set.HasValue(attribute.Key(key)) {
					names = append(names, m.Name)
					break
				}
			}
		}
	}
	return names
}

func attrSets(data metricdata.Aggregation) []attribute.Set {
	var sets []attribute.Set
	switch d := data.(type) {
	case metricdata.Sum[int64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Sum[float64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Gauge[int64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Gauge[float64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			sets = append(sets, dp.Attributes)
		}
	}
	return sets
}
