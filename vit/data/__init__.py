"""Photos in: ImageFolder listings, the train / validation split, datasets and the course's downloads
(`datasets`), opening any upload safely (`images`), and the offline non-food set the gate is measured
against (`nonfood`)."""
