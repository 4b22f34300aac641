package kernels

import "math"

// Plain single-threaded versions of every primitive, written to be obviously
// right rather than fast: the tests compare the CPU device against them. Same
// shapes and semantics as the Device methods, on host slices. Math is in float64
// where that is simpler to get right.

// refGemm: C (m,n) = alpha*op(A) @ op(B) + beta*C, row-major with row strides
// lda, ldb, ldc; beta == 0 overwrites C.
func refGemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s float64
			for p := 0; p < k; p++ {
				var av, bv float32
				if transA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if transB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			r := float64(alpha) * s
			if beta != 0 {
				r += float64(beta) * float64(c[i*ldc+j])
			}
			c[i*ldc+j] = float32(r)
		}
	}
}

// refAddBias: out (N,OC) += bias (OC).
func refAddBias(out, bias []float32, N, OC int) {
	for i := 0; i < N; i++ {
		for j := 0; j < OC; j++ {
			out[i*OC+j] += bias[j]
		}
	}
}

// refBiasBackward: dbias (OC) += column sums of dout (N,OC).
func refBiasBackward(dbias, dout []float32, N, OC int) {
	for j := 0; j < OC; j++ {
		var s float64
		for i := 0; i < N; i++ {
			s += float64(dout[i*OC+j])
		}
		dbias[j] += float32(s)
	}
}

// refEncoderForward: out (N,C) = wte[tokens[i]] + wpe[pos[i]].
func refEncoderForward(out []float32, tokens, pos []int32, wte, wpe []float32, N, C int) {
	for i := 0; i < N; i++ {
		for j := 0; j < C; j++ {
			out[i*C+j] = wte[int(tokens[i])*C+j] + wpe[int(pos[i])*C+j]
		}
	}
}

// refEncoderBackward: dwte[tokens[i]] += dout[i], dwpe[pos[i]] += dout[i].
func refEncoderBackward(dwte, dwpe, dout []float32, tokens, pos []int32, N, C int) {
	for i := 0; i < N; i++ {
		for j := 0; j < C; j++ {
			dwte[int(tokens[i])*C+j] += dout[i*C+j]
			dwpe[int(pos[i])*C+j] += dout[i*C+j]
		}
	}
}

// refLayerNormForward: out (N,C) = (inp-mean)/sqrt(var+eps)*weight + bias; mean,
// rstd (N) saved.
func refLayerNormForward(out, mean, rstd, inp, weight, bias []float32, N, C int, eps float32) {
	for i := 0; i < N; i++ {
		x := inp[i*C : i*C+C]
		var m float64
		for _, v := range x {
			m += float64(v)
		}
		m /= float64(C)
		var vr float64
		for _, v := range x {
			vr += (float64(v) - m) * (float64(v) - m)
		}
		vr /= float64(C)
		r := 1 / math.Sqrt(vr+float64(eps))
		for j, v := range x {
			out[i*C+j] = float32((float64(v)-m)*r*float64(weight[j]) + float64(bias[j]))
		}
		mean[i], rstd[i] = float32(m), float32(r)
	}
}

// refLayerNormBackward: dinp (N,C), dweight (C), dbias (C) += gradients of the
// layernorm, written out term by term from y_j = w_j*(x_j-m)*r + b_j.
func refLayerNormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd []float32, N, C int) {
	for i := 0; i < N; i++ {
		m, r := float64(mean[i]), float64(rstd[i])
		// dL/dnorm_j = w_j*dout_j; dnorm_j/dx_k = r*(δjk - 1/C - norm_j*norm_k/C).
		var sumG, sumGN float64
		for j := 0; j < C; j++ {
			g := float64(weight[j]) * float64(dout[i*C+j])
			nrm := (float64(inp[i*C+j]) - m) * r
			sumG += g
			sumGN += g * nrm
		}
		for k := 0; k < C; k++ {
			g := float64(weight[k]) * float64(dout[i*C+k])
			nrm := (float64(inp[i*C+k]) - m) * r
			dinp[i*C+k] += float32(r * (g - sumG/float64(C) - nrm*sumGN/float64(C)))
			dweight[k] += float32(nrm * float64(dout[i*C+k]))
			dbias[k] += dout[i*C+k]
		}
	}
}

// refGelu is the tanh form of GELU (HF gelu_new) in float64.
func refGelu(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// refGeluGrad is d refGelu / dx.
func refGeluGrad(x float64) float64 {
	s := math.Sqrt(2 / math.Pi)
	u := s * (x + 0.044715*x*x*x)
	th := math.Tanh(u)
	return 0.5*(1+th) + 0.5*x*(1-th*th)*s*(1+3*0.044715*x*x)
}

// refGeluForward: out (n) = gelu(inp).
func refGeluForward(out, inp []float32, n int) {
	for i := 0; i < n; i++ {
		out[i] = float32(refGelu(float64(inp[i])))
	}
}

// refGeluBackward: dinp (n) += gelu'(inp)*dout.
func refGeluBackward(dinp, inp, dout []float32, n int) {
	for i := 0; i < n; i++ {
		dinp[i] += float32(refGeluGrad(float64(inp[i])) * float64(dout[i]))
	}
}

// refAttentionForward: qkv (B,T,3C), att (B,NH,T,T), out (B,T,C); causal softmax
// attention per head, straight from the definition.
func refAttentionForward(out, att, qkv []float32, B, T, C, NH int) {
	hs := C / NH
	scale := 1 / math.Sqrt(float64(hs))
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			for t := 0; t < T; t++ {
				q := qkv[(b*T+t)*3*C+h*hs:]
				a := att[((b*NH+h)*T+t)*T : ((b*NH+h)*T+t+1)*T]
				s := make([]float64, t+1)
				mx := math.Inf(-1)
				for u := 0; u <= t; u++ {
					k := qkv[(b*T+u)*3*C+C+h*hs:]
					var d float64
					for e := 0; e < hs; e++ {
						d += float64(q[e]) * float64(k[e])
					}
					s[u] = d * scale
					mx = math.Max(mx, s[u])
				}
				var sum float64
				for u := range s {
					s[u] = math.Exp(s[u] - mx)
					sum += s[u]
				}
				for u := 0; u < T; u++ {
					a[u] = 0
					if u <= t {
						a[u] = float32(s[u] / sum)
					}
				}
				for e := 0; e < hs; e++ {
					var o float64
					for u := 0; u <= t; u++ {
						o += s[u] / sum * float64(qkv[(b*T+u)*3*C+2*C+h*hs+e])
					}
					out[(b*T+t)*C+h*hs+e] = float32(o)
				}
			}
		}
	}
}

// refAttentionBackward: dqkv (B,T,3C) += gradient of refAttentionForward's out
// given dout (B,T,C), through the saved att.
func refAttentionBackward(dqkv, dout, qkv, att []float32, B, T, C, NH int) {
	hs := C / NH
	scale := 1 / math.Sqrt(float64(hs))
	for b := 0; b < B; b++ {
		for h := 0; h < NH; h++ {
			for t := 0; t < T; t++ {
				a := att[((b*NH+h)*T+t)*T:]
				do := dout[(b*T+t)*C+h*hs:]
				// out_t = sum_u a_tu v_u
				datt := make([]float64, t+1)
				for u := 0; u <= t; u++ {
					v := qkv[(b*T+u)*3*C+2*C+h*hs:]
					dv := dqkv[(b*T+u)*3*C+2*C+h*hs:]
					for e := 0; e < hs; e++ {
						datt[u] += float64(do[e]) * float64(v[e])
						dv[e] += float32(float64(a[u]) * float64(do[e]))
					}
				}
				// a_t = softmax(s_t): ds_tu = a_tu (datt_u - sum_w a_tw datt_w)
				var dot float64
				for u := 0; u <= t; u++ {
					dot += float64(a[u]) * datt[u]
				}
				q := qkv[(b*T+t)*3*C+h*hs:]
				dq := dqkv[(b*T+t)*3*C+h*hs:]
				for u := 0; u <= t; u++ {
					ds := float64(a[u]) * (datt[u] - dot) * scale // s_tu = scale * q_t.k_u
					k := qkv[(b*T+u)*3*C+C+h*hs:]
					dk := dqkv[(b*T+u)*3*C+C+h*hs:]
					for e := 0; e < hs; e++ {
						dq[e] += float32(ds * float64(k[e]))
						dk[e] += float32(ds * float64(q[e]))
					}
				}
			}
		}
	}
}

// refAttentionCached: rows one at a time, in order: write k, v of row i into the
// caches (S,maxT,C) at [slot[i], pos[i]], then attend q over positions 0..pos[i].
func refAttentionCached(out, qkv, kcache, vcache []float32, slot, pos []int32, N, C, NH, maxT int) {
	hs := C / NH
	scale := 1 / math.Sqrt(float64(hs))
	for i := 0; i < N; i++ {
		base := int(slot[i]) * maxT * C
		P := int(pos[i]) + 1
		copy(kcache[base+(P-1)*C:base+P*C], qkv[i*3*C+C:i*3*C+2*C])
		copy(vcache[base+(P-1)*C:base+P*C], qkv[i*3*C+2*C:i*3*C+3*C])
		for h := 0; h < NH; h++ {
			s := make([]float64, P)
			mx := math.Inf(-1)
			for u := 0; u < P; u++ {
				var d float64
				for e := 0; e < hs; e++ {
					d += float64(qkv[i*3*C+h*hs+e]) * float64(kcache[base+u*C+h*hs+e])
				}
				s[u] = d * scale
				mx = math.Max(mx, s[u])
			}
			var sum float64
			for u := range s {
				s[u] = math.Exp(s[u] - mx)
				sum += s[u]
			}
			for e := 0; e < hs; e++ {
				var o float64
				for u := 0; u < P; u++ {
					o += s[u] / sum * float64(vcache[base+u*C+h*hs+e])
				}
				out[i*C+h*hs+e] = float32(o)
			}
		}
	}
}

// refLogSoftmax returns log softmax(x) in float64.
func refLogSoftmax(x []float32) []float64 {
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, float64(v))
	}
	var s float64
	for _, v := range x {
		s += math.Exp(float64(v) - mx)
	}
	out := make([]float64, len(x))
	for j, v := range x {
		out[j] = float64(v) - mx - math.Log(s)
	}
	return out
}

// refLogProbForward: logp (N) = log softmax(logits (N,V) row)[target].
func refLogProbForward(logp, logits []float32, targets []int32, N, V int) {
	for i := 0; i < N; i++ {
		logp[i] = float32(refLogSoftmax(logits[i*V : i*V+V])[targets[i]])
	}
}

// refLogProbBackward: dlogits (N,V) += dlogp[i]*(onehot - softmax).
func refLogProbBackward(dlogits, logits []float32, targets []int32, dlogp []float32, N, V int) {
	for i := 0; i < N; i++ {
		ls := refLogSoftmax(logits[i*V : i*V+V])
		for j := 0; j < V; j++ {
			oh := 0.0
			if j == int(targets[i]) {
				oh = 1
			}
			dlogits[i*V+j] += float32(float64(dlogp[i]) * (oh - math.Exp(ls[j])))
		}
	}
}

// refEntropyForward: ent (N) = -Σ_j p_j log p_j of softmax(logits (N,V) row).
func refEntropyForward(ent, logits []float32, N, V int) {
	for i := 0; i < N; i++ {
		var h float64
		for _, lp := range refLogSoftmax(logits[i*V : i*V+V]) {
			if p := math.Exp(lp); p > 0 {
				h -= p * lp
			}
		}
		ent[i] = float32(h)
	}
}

// refEntropyBackward: dlogits (N,V) += dent[i] * (-p_j (log p_j + H_i)).
func refEntropyBackward(dlogits, logits []float32, dent []float32, N, V int) {
	for i := 0; i < N; i++ {
		ls := refLogSoftmax(logits[i*V : i*V+V])
		var h float64
		for _, lp := range ls {
			if p := math.Exp(lp); p > 0 {
				h -= p * lp
			}
		}
		for j, lp := range ls {
			if p := math.Exp(lp); p > 0 {
				dlogits[i*V+j] += float32(-float64(dent[i]) * p * (lp + h))
			}
		}
	}
}

// refAdamW: PyTorch's torch.optim.AdamW step in float64 (decay first, then the
// bias-corrected Adam step), results stored back in float32.
func refAdamW(params, grads, m, v []float32, step int, lr, beta1, beta2, eps, weightDecay float32) {
	b1, b2 := float64(beta1), float64(beta2)
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	for i := range params {
		g := float64(grads[i])
		p := float64(params[i]) * (1 - float64(lr)*float64(weightDecay))
		mi := b1*float64(m[i]) + (1-b1)*g
		vi := b2*float64(v[i]) + (1-b2)*g*g
		denom := math.Sqrt(vi)/math.Sqrt(bc2) + float64(eps)
		p -= float64(lr) / bc1 * mi / denom
		params[i], m[i], v[i] = float32(p), float32(mi), float32(vi)
	}
}

// refSumSquares: sum of x^2 in float64.
func refSumSquares(x []float32) float64 {
	var s float64
	for _, v := range x {
		s += float64(v) * float64(v)
	}
	return s
}
