//! Simulated sensors with believable readings: a thermometer whose temperature drifts
//! around a set point, an energy meter whose pulse counter only grows, and a door switch
//! that opens now and then. Deterministic per seed, so runs can be reproduced.

use edge_event::{Event, Reading, TooLong, Value};

/// A small, fast PRNG (xorshift64*); quality is plenty for fake readings and jitter.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; a zero seed is replaced (xorshift never leaves 0).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[-1, 1)`.
    fn signed(&mut self) -> f64 {
        self.unit() * 2.0 - 1.0
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Thermometer { set_point: f64, celsius: f64, humidity: f64 },
    Meter { pulses: i64, watts: f64 },
    Door { open: bool, openings: i64 },
}

/// One simulated sensor.
#[derive(Debug, Clone)]
pub struct Sensor {
    kind: Kind,
    rng: Rng,
}

impl Sensor {
    /// The `index`-th sensor of a fleet: thermometers, meters and doors in turn.
    pub fn new(index: usize, seed: u64) -> Sensor {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let kind = match index % 3 {
            0 => {
                let set_point = 18.0 + 6.0 * rng.unit();
                Kind::Thermometer { set_point, celsius: set_point, humidity: 40.0 + 20.0 * rng.unit() }
            }
            1 => Kind::Meter { pulses: (rng.next_u64() % 100_000) as i64, watts: 300.0 + 900.0 * rng.unit() },
            _ => Kind::Door { open: false, openings: 0 },
        };
        Sensor { kind, rng }
    }

    /// The event type this sensor sends.
    pub fn event_type(&self) -> &'static str {
        match self.kind {
            Kind::Thermometer { .. } => "temperature",
            Kind::Meter { .. } => "energy",
            Kind::Door { .. } => "door",
        }
    }

    /// Advances the simulation by one reading and writes it into `event`.
    pub fn fill(&mut self, event: &mut Event) -> Result<(), TooLong> {
        let rng = &mut self.rng;
        match &mut self.kind {
            Kind::Thermometer { set_point, celsius, humidity } => {
                // A random walk pulled back towards the set point.
                *celsius += 0.05 * rng.signed() + 0.02 * (*set_point - *celsius);
                *humidity = (*humidity + 0.2 * rng.signed()).clamp(5.0, 95.0);
                event.push_reading(Reading::new("celsius", Value::F32(round(*celsius, 100.0)))?.with_unit("C")?)?;
                event.push_reading(Reading::new("humidity", Value::F32(round(*humidity, 10.0)))?.with_unit("%")?)?;
            }
            Kind::Meter { pulses, watts } => {
                *watts = (*watts + 20.0 * rng.signed()).clamp(50.0, 3000.0);
                *pulses += 1 + (rng.next_u64() % 4) as i64;
                event.push_reading(Reading::new("pulses", Value::I64(*pulses))?)?;
                event.push_reading(Reading::new("watts", Value::F32(round(*watts, 10.0)))?.with_unit("W")?)?;
            }
            Kind::Door { open, openings } => {
                if rng.unit() < 0.1 {
                    *open = !*open;
                    if *open {
                        *openings += 1;
                    }
                }
                event.push_reading(Reading::new("open", Value::Bool(*open))?)?;
                event.push_reading(Reading::new("openings", Value::I64(*openings))?)?;
            }
        }
        Ok(())
    }
}

fn round(value: f64, scale: f64) -> f32 {
    ((value * scale).round() / scale) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_event::Timestamp;

    fn readings(sensor: &mut Sensor, n: usize) -> Vec<Event> {
        (0..n)
            .map(|_| {
                let mut event = Event::new("s", 1, 1, Timestamp::Unknown, sensor.event_type()).expect("event");
                sensor.fill(&mut event).expect("readings fit");
                event
            })
            .collect()
    }

    #[test]
    fn temperatures_drift_but_stay_near_their_set_point() {
        let mut sensor = Sensor::new(0, 42);
        let values: Vec<f64> = readings(&mut sensor, 2000)
            .iter()
            .filter_map(|e| e.reading("celsius").and_then(|r| r.value.as_f64()))
            .collect();
        assert_eq!(values.len(), 2000);
        assert!(values.windows(2).any(|w| w[0] != w[1]), "the temperature moves");
        assert!(values.iter().all(|v| (15.0..27.0).contains(v)), "and stays plausible");
    }

    #[test]
    fn meter_pulses_only_grow_and_doors_count_their_openings() {
        let mut meter = Sensor::new(1, 42);
        let pulses: Vec<f64> = readings(&mut meter, 100)
            .iter()
            .filter_map(|e| e.reading("pulses").and_then(|r| r.value.as_f64()))
            .collect();
        assert!(pulses.windows(2).all(|w| w[1] > w[0]));
        let mut door = Sensor::new(2, 42);
        let events = readings(&mut door, 500);
        let last = events.last().and_then(|e| e.reading("openings")).and_then(|r| r.value.as_f64());
        assert!(last.is_some_and(|n| n > 5.0), "{last:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_readings() {
        let a = readings(&mut Sensor::new(0, 7), 10);
        let b = readings(&mut Sensor::new(0, 7), 10);
        assert_eq!(a, b);
    }
}
