package config

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Percent is a share written with its sign, "1%" or "0.5%": a bare 0.01
// could be read as one percent or as a hundredth of one.
type Percent float64

// ParsePercent parses "1%" or "0.5%".
func ParsePercent(s string) (Percent, error) {
	s = strings.TrimSpace(s)
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("%q is not a percentage like 1%% (the %% sign is required)", s)
	}
	f, err := strconv.ParseFloat(strings.TrimSpace(num), 64)
	if err != nil || f < 0 || f > 100 {
		return 0, fmt.Errorf("%q is not a percentage between 0%% and 100%%", s)
	}
	return Percent(f), nil
}

// UnmarshalYAML accepts "1%".
func (p *Percent) UnmarshalYAML(n *yaml.Node) error {
	return decodeScalar(n, p, "a percentage must be a single value like 1%", ParsePercent)
}

// MarshalYAML writes "1%".
func (p Percent) MarshalYAML() (any, error) { return p.String(), nil }

func (p Percent) String() string { return strconv.FormatFloat(float64(p), 'f', -1, 64) + "%" }

// Fraction is the share as a fraction of one: 1% is 0.01.
func (p Percent) Fraction() float64 { return float64(p) / 100 }

// Set and Type make Percent usable as a pflag value.
func (p *Percent) Set(s string) error {
	v, err := ParsePercent(s)
	if err != nil {
		return err
	}
	*p = v
	return nil
}

// Type names the flag's value in --help.
func (p *Percent) Type() string { return "percent" }
